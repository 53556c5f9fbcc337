"""The async client as a simulated guest (``ring_guest.py``) against Debian's
C xenstored and against pyxenstored, both on the stand-in hypervisor.

Domain 5 maps ``dom5/ring``, allocates an unbound port, and is introduced by
dom0 (an async ``Client`` on the daemon's socket, acting as the toolstack);
then the ``Client`` runs over the ring. The guest's client trusts the kicks
alone (``poll_interval=None``) wherever it can, so the tests also prove that
the daemon's event-channel notifications reach it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from fakexen_support import (
    C_XENSTORED,
    Daemon,
    FakeXen,
    running_daemon,
)
from ring_guest import RingGuest

from pyxenstored.client import (
    Client,
    ConnectionClosed,
    Transaction,
    XenstoreError,
)
from pyxenstored.ring import RING_SIZE

DOMID = 5
HOME = f"/local/domain/{DOMID}"
#: Every test must finish well within this (seconds).
DEADLINE = 20


@pytest.fixture(params=["c", "py"])
def daemon(
    request: pytest.FixtureRequest, fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> Iterator[Daemon]:
    with running_daemon(request.param, fx, tmp_path / "run") as d:
        yield d





async def test_ops_over_the_ring(dom0: Client, guest: RingGuest) -> None:
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=None) as client:
            await client.write("name", "guest5")
            assert await client.read("name") == b"guest5"
            assert await client.read(f"{HOME}/name") == b"guest5"
            assert await dom0.read(f"{HOME}/name") == b"guest5"
            await client.write("device/vbd/768/state", "1")
            assert await client.directory("device/vbd") == ["768"]
            with pytest.raises(XenstoreError) as info:
                await client.write("/local/domain/0/x", "no")
            assert info.value.name == "EACCES"
            with pytest.raises(XenstoreError) as info:
                await client.read("missing")
            assert info.value.name == "ENOENT"
            assert await client.get_domain_path(DOMID) == HOME
    assert guest.doorbell.kicks_sent > 0
    assert guest.doorbell.kicks_received > 0
    assert guest.ring.error == 0


async def test_watch_event_over_the_ring(dom0: Client, guest: RingGuest) -> None:
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=None) as client:
            async with client.watch("data", token="tok") as events:
                first = await events.receive()
                assert (first.path, first.token) == ("data", "tok")
                await dom0.write(f"{HOME}/data/x", "1")  # the toolstack's change
                event = await events.receive()
                assert (event.path, event.token) == ("data/x", "tok")
                await client.write("data/y", "2")  # the guest's own
                event = await events.receive()
                assert (event.path, event.token) == ("data/y", "tok")


async def test_transaction_over_the_ring(dom0: Client, guest: RingGuest) -> None:
    attempts = 0

    async def move(tx: Transaction) -> bytes:
        nonlocal attempts
        attempts += 1
        value = await tx.read("src")
        if attempts == 1:
            await dom0.write(f"{HOME}/src", "changed")  # conflict: EAGAIN, retry
        await tx.write("dst", value)
        await tx.rm("src")
        return value

    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=None) as client:
            await client.write("src", "original")
            assert await client.run_transaction(move) == b"changed"
            assert attempts == 2
            assert await client.read("dst") == b"changed"
            assert await dom0.directory(HOME) == ["dst"]


async def test_large_values_and_pipelining(dom0: Client, guest: RingGuest) -> None:
    values = [bytes([65 + i]) * (1500 + 37 * i) for i in range(10)]  # C's node-size: 2048
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=None) as client:
            for i, value in enumerate(values):
                await client.write(f"big/{i}", value)
            replies = await client.pipeline((2, f"big/{i}\0".encode()) for i in range(10))
            assert replies == values
            # Far more than the outstanding-request quota and the ring hold at once.
            many = [client.send_request(11, f"p/{i}\0{i}".encode()) for i in range(200)]
            assert [await reply for reply in many] == [b"OK\0"] * 200
            assert sorted(await dom0.directory(f"{HOME}/p"), key=int) == [
                str(i) for i in range(200)
            ]
    req_cons, req_prod, rsp_cons, rsp_prod = guest.indices()
    assert req_cons == req_prod > 20 * RING_SIZE
    assert rsp_cons == rsp_prod > 15 * RING_SIZE


async def test_daemon_ignores_a_guest_with_bad_indices(dom0: Client, guest: RingGuest) -> None:
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=0.02) as client:
            await client.write("before", "1")
            guest.corrupt_request_index()  # misbehave: req_prod a ring and a byte ahead
            while guest.ring.error == 0:  # else the client may see the bad index first
                await trio.sleep(0.005)
            with pytest.raises(ConnectionClosed) as info:
                await client.read("before")
    # C 4.17 advertises no features yet writes the error field (to RINGIDX).
    assert "error field to RINGIDX (2)" in str(info.value)
    # Only that connection is affected; the domain stays (XSA-325).
    assert await dom0.read(f"{HOME}/before") == b"1"
    assert await dom0.is_domain_introduced(DOMID)


async def test_daemon_ignores_a_guest_that_breaks_the_framing(
    dom0: Client, guest: RingGuest, daemon: Daemon
) -> None:
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=0.02) as client:
            await client.write("before", "1")
            # Misbehave: a WRITE header announcing 5000 bytes (> 4096).
            assert guest.send_raw(struct.pack("<IIII", 11, 77, 0, 5000)) == 16
            while guest.ring.error == 0:
                await trio.sleep(0.005)
            with pytest.raises(ConnectionClosed) as info:
                await client.read("before")
    assert "error field to PROTO (3)" in str(info.value)
    assert await dom0.read(f"{HOME}/before") == b"1"
    if daemon.argv[0] == str(C_XENSTORED):
        with pytest.raises(RuntimeError, match="RECONNECTION"):
            guest.start_reconnect()  # C 4.17 does not advertise it


async def test_guest_reconnect_mid_packet(
    dom0: Client, guest: RingGuest, daemon: Daemon
) -> None:
    """Spec 7.4: a guest-initiated reset in the middle of a packet.

    The server drops the partial request, the guest's watches and transactions,
    zeroes the indices and answers CONNECTED; the guest then starts afresh.
    C 4.17 does not advertise RECONNECTION, so only pyxenstored is checked.
    """
    if daemon.argv[0] == str(C_XENSTORED):
        pytest.skip("C xenstored does not advertise RECONNECTION (spec 7.4)")
    with trio.fail_after(DEADLINE):
        async with guest.client(poll_interval=None) as client:
            await client.write("kept", "1")
            await client.request(4, b"kept\0old\0")  # a raw WATCH, kept past this client
            tx_id = await client.transaction_start()
        # Half a WRITE header, then the reset request.
        assert guest.send_raw(struct.pack("<II", 11, 99)) == 8
        guest.start_reconnect()
        while not guest.ring.connected:
            await trio.sleep(0.005)
        assert guest.indices() == (0, 0, 0, 0)
        async with guest.client(poll_interval=None) as client:
            assert await client.read("kept") == b"1"
            with pytest.raises(XenstoreError) as info:
                await client.request(2, b"kept\0", tx_id=tx_id)
            assert info.value.name == "ENOENT"
            async with client.watch("kept", token="old") as events:  # not EEXIST
                first = await events.receive()
                assert first.token == "old"
