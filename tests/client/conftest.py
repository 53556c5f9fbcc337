from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from client_fake_peer import FakePeer

from pyxenstored.client import Client, open_stream_client


@pytest.fixture
async def pair(watchdog: None) -> AsyncIterator[tuple[Client, FakePeer]]:
    """A running client wired to a scripted fake server (and a watchdog)."""
    client_end, server_end = trio.testing.memory_stream_pair()
    async with open_stream_client(client_end) as client:
        yield client, FakePeer(server_end)


#: Seconds (of the test's clock) after which a stuck test fails.
WATCHDOG_SECONDS = 20


async def _watchdog() -> None:
    await trio.sleep(WATCHDOG_SECONDS)
    raise TimeoutError(f"client test still running after {WATCHDOG_SECONDS}s: deadlock?")


@pytest.fixture
async def watchdog() -> AsyncIterator[None]:
    """Fail a test that hangs (a mismatched reply is waited for forever).

    Not autouse: pytest-trio refuses async fixtures on synchronous tests.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watchdog)
        yield
        nursery.cancel_scope.cancel()
