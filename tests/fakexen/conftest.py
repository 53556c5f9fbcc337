"""Fixtures shared by the stand-in tests: the library, a fresh ``$FAKEXEN_DIR``,
and an async guest (domain 5) introduced by a socket client ``dom0``; a test
module using those two provides the ``daemon`` fixture."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from fakexen_support import Daemon, FakeXen, build_library
from ring_guest import RingGuest

from pyxenstored.client import Client, open_client

GUEST_DOMID = 5
GUEST_HOME = f"/local/domain/{GUEST_DOMID}"
#: Seconds a fixture's set-up may take on a loaded machine.
SETUP_DEADLINE = 20


@pytest.fixture(scope="session")
def fakexen_library() -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build tests/fakexen/libfakexen.so")
    if not Path("/usr/include/xenevtchn.h").exists():
        pytest.skip("libxen-dev headers (xenevtchn.h) are not installed")
    return build_library()


@pytest.fixture
def fx(tmp_path: Path) -> FakeXen:
    return FakeXen(tmp_path / "fx")


@pytest.fixture
def guest(fx: FakeXen) -> Iterator[RingGuest]:
    fx.set_domain(GUEST_DOMID, "running")
    g = RingGuest(fx.root, GUEST_DOMID)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
async def dom0(daemon: Daemon, guest: RingGuest) -> AsyncIterator[Client]:
    """The toolstack: creates the domain's home and introduces its ring."""
    async with open_client(daemon.socket_path) as client:
        with trio.fail_after(SETUP_DEADLINE):
            await client.mkdir(GUEST_HOME)
            await client.set_perms(GUEST_HOME, [f"n{GUEST_DOMID}"])
            await client.introduce(GUEST_DOMID, 0xFEFFF, guest.port)
            assert await client.is_domain_introduced(GUEST_DOMID)
        yield client
