"""XSA-206 through the ring: a guest flooding writes while a transaction is open.

Domain 5 (an async ``Client`` over its ring, ``ring_guest.py``) writes one
node over and over, first while dom0 (a socket client) holds a transaction
open and then after dom0 has ended it. C's write-rate limit, which
pyxenstored reproduces (spec 6.1), makes each of those writes cost one
credit while any transaction is open: the guest spends its burst of 10
(the reserve is in debt at start-up, having seeded dom0 and the guest), then
earns credit at its share of 200 writes a second, and while its credit is
negative its ring is not read, so its writes are delayed. Once the
transaction has ended writes are free again and the guest resumes.

Timing is asserted from below: however the credit was shared, no more
than ``RATE`` writes a second were earned since the daemon started, so the
flood cannot have been faster than that allows (a slow start-up only
weakens the bound). The one comparison from above is with the same writes
once the transaction has ended (about 0.02 s against 0.4 s here). The same
scenarios run against Debian's C xenstored on the stand-in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from fakexen_support import Daemon, FakeXen, running_daemon
from ring_guest import RingGuest

from pyxenstored.client import Client
from pyxenstored.protocol.ops import Op

DOMID = 5
HOME = f"/local/domain/{DOMID}"
DEADLINE = 20
#: Writes of one existing node during the transaction: one credit each.
WRITES = 100
#: The guest's burst, in writes.
BURST = 10
#: Writes per second all domains together earn at most.
RATE = 200


#: ``time.monotonic()`` before the daemon under test was started.
_started: list[float] = []


@pytest.fixture(params=["c", "py"])
def daemon(
    request: pytest.FixtureRequest, fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> Iterator[Daemon]:
    _started[:] = [time.monotonic()]
    with running_daemon(request.param, fx, tmp_path / "run") as d:
        yield d


def _least_time(writes: int, flood_start: float) -> float:
    """Seconds ``writes`` one-credit writes must take, begun at ``flood_start``.

    The guest has its burst; the reserve (which lent dom0's and the guest's
    bursts at introduction) holds at most what was earned since the daemon
    started beyond those; everything else must be earned meanwhile, at most
    ``RATE`` a second among all domains. One write may overdraw.
    """
    reserve = max(0.0, RATE * (flood_start - _started[0]) - 2 * BURST)
    return (writes - 1 - BURST - reserve) / RATE





async def _flood(client: Client, first: int, count: int) -> tuple[float, float]:
    """``count`` writes of ``data``, one after the other: when they began
    and the seconds they took."""
    start = time.monotonic()
    for i in range(first, first + count):
        await client.write("data", str(i))
    return start, time.monotonic() - start


async def test_flood_is_delayed_while_a_transaction_is_open(
    daemon: Daemon, dom0: Client, guest: RingGuest
) -> None:
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=None) as client:
            await client.write("data", "start")  # no transaction open: free
            async with dom0.transaction() as tx:
                await tx.write("/tool/marker", "dom0")
                start, during = await _flood(client, 0, WRITES)
                # Nothing the guest wrote was lost, only delayed.
                assert await dom0.read(f"{HOME}/data") == str(WRITES - 1).encode()
            _, after = await _flood(client, WRITES, WRITES)
            assert await client.read("data") == str(2 * WRITES - 1).encode()
    assert during >= _least_time(WRITES, start), (during, after)
    assert after < during, (during, after)
    if "pyxenstored" in " ".join(daemon.argv):
        log = daemon.log.read_text(errors="replace")
        assert f"write rate limit: domain {DOMID} is affected" in log


async def test_pipelined_flood_is_read_one_request_at_a_time(
    dom0: Client, guest: RingGuest
) -> None:
    """Requests already in the ring are not read either: C takes one request
    at a time and checks the credit before each, so a guest cannot get a
    ring's worth of writes past the limit by sending them all at once."""
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=None) as client:
            await client.write("data", "start")
            async with dom0.transaction() as tx:
                await tx.write("/tool/marker", "dom0")
                start = time.monotonic()
                replies = await client.pipeline(
                    (Op.WRITE, f"{HOME}/data\0{i}".encode()) for i in range(WRITES)
                )
                during = time.monotonic() - start
            assert replies == [b"OK\0"] * WRITES
            assert await client.read("data") == str(WRITES - 1).encode()
    assert during >= _least_time(WRITES, start), during
