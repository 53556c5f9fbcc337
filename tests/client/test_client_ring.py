"""The async client over a ring page (``RingStream``), in-process.

The page is a ``bytearray``; the event channel is a pair of in-memory
doorbells; the server is a few lines of shell around the real pieces: a
``ServerRing`` on the same page, a ``Decoder`` and the ``Engine``, with
domain 5 introduced by a dom0 socket connection (the toolstack). No stand-in
hypervisor or subprocess is needed.

Most tests run with ``poll_interval=None``, so they prove that the kicks
alone keep both sides moving; ``test_lost_kicks_*`` covers the re-poll.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from pyxenstored.client import (
    Client,
    ConnectionClosed,
    Transaction,
    XenstoreError,
    open_stream_client,
)
from pyxenstored.client.ring import RingStream, describe_ring_error, open_ring_client
from pyxenstored.config import DEFAULT_HARD_QUOTAS, Config
from pyxenstored.engine import Engine
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import PAYLOAD_MAX, Packet
from pyxenstored.ring import (
    PAGE_SIZE,
    RING_SIZE,
    BadRingError,
    GuestRing,
    RingError,
    RingPage,
    ServerRing,
)

DOMID = 5
HOME = f"/local/domain/{DOMID}"


class MemoryDoorbell:
    """One end of an in-memory event channel, with Xen's pending bit.

    ``notify()`` sets the peer's pending bit; ``wait()`` returns once the
    bit is set and clears it. ``drop`` makes this end lose every kick it
    sends (a misbehaving peer, or a lost event).
    """

    def __init__(self) -> None:
        self.peer: MemoryDoorbell | None = None
        self.drop = False
        self.kicks_sent = 0
        self._pending = False
        self._event = trio.Event()

    def notify(self) -> None:
        self.kicks_sent += 1
        if self.drop or self.peer is None:
            return
        self.peer._pending = True
        self.peer._event.set()

    async def wait(self) -> None:
        if self._pending:
            await trio.lowlevel.checkpoint()
        else:
            await self._event.wait()
        self._pending = False
        self._event = trio.Event()


def doorbell_pair() -> tuple[MemoryDoorbell, MemoryDoorbell]:
    guest, server = MemoryDoorbell(), MemoryDoorbell()
    guest.peer, server.peer = server, guest
    return guest, server


class RingServer:
    """A minimal daemon shell for one domain's ring, around the real engine."""

    def __init__(self, page: bytearray, doorbell: MemoryDoorbell) -> None:
        # Big enough for a value that fills a WRITE's whole 4096-byte payload.
        quotas = dict(DEFAULT_HARD_QUOTAS, **{"node-size": 2 * PAYLOAD_MAX})
        self.engine = Engine(Config(hard_quotas=quotas))
        self.dom0 = self.engine.connect_socket()
        self.doorbell = doorbell
        self.ring = ServerRing(RingPage(page))
        self.decoder = Decoder()
        self.outgoing = bytearray()
        #: Every request the domain sent, and the sizes of the ring reads.
        self.requests: list[Packet] = []
        self.read_sizes: list[int] = []
        self.ignored: BadRingError | ProtocolError | None = None
        self.toolstack(Op.INTRODUCE, f"{DOMID}\0{1}\0{7}\0".encode())
        self.toolstack(Op.MKDIR, f"{HOME}\0".encode())
        self.toolstack(Op.SET_PERMS, f"{HOME}\0n{DOMID}\0".encode())
        domain = self.engine.domains.get(DOMID)
        assert domain is not None and domain.conn_id is not None
        self.conn = domain.conn_id
        self.ring.connect()
        self.kick()

    def toolstack(self, op: int, payload: bytes) -> Packet:
        """One request from dom0's socket; its reply. Output for the domain
        that it caused (watch events) is pushed into the ring."""
        self.engine.handle(self.dom0, Packet(op, 1, 0, payload))
        packets = Decoder().feed(self.engine.take_output(self.dom0))
        replies = [p for p in packets if p.type != Op.WATCH_EVENT]
        assert len(replies) == 1
        if hasattr(self, "conn"):
            self.pump()
        return replies[0]

    def kick(self) -> None:
        if self.ring.take_notify():
            self.doorbell.notify()

    def pump(self) -> None:
        """Move bytes both ways until neither direction makes progress."""
        if self.ignored is not None:
            return
        try:
            progress = True
            while progress:
                progress = False
                while data := self.ring.read_requests():
                    self.read_sizes.append(len(data))
                    for packet in self.decoder.feed(data):
                        self.requests.append(packet)
                        self.engine.handle(self.conn, packet)
                    progress = True
                self.decoder.feed(b"")  # raises a deferred framing error
                self.outgoing += self.engine.take_output(self.conn)
                if self.outgoing:
                    sent = self.ring.write_responses(self.outgoing)
                    del self.outgoing[:sent]
                    progress = progress or sent > 0
        except BadRingError as exc:
            self.ignored = exc  # ServerRing already published RINGIDX
        except ProtocolError as exc:
            self.ignored = exc
            self.ring.ignore(RingError.PROTO)
        self.kick()

    async def run(self) -> None:
        while True:
            self.pump()
            await self.doorbell.wait()


class Setup:
    def __init__(self, poll_interval: float | None = None) -> None:
        self.page = bytearray(PAGE_SIZE)
        self.guest_bell, server_bell = doorbell_pair()
        self.server = RingServer(self.page, server_bell)
        self.poll_interval = poll_interval

    def stream(self) -> RingStream:
        return RingStream(self.page, self.guest_bell, poll_interval=self.poll_interval)


@pytest.fixture
async def setup(watchdog: None) -> AsyncIterator[Setup]:
    s = Setup()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.server.run)
        yield s
        nursery.cancel_scope.cancel()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[Client]:
    async with open_ring_client(setup.page, setup.guest_bell, poll_interval=None) as c:
        yield c


def write_raw_requests(page: bytearray, data: bytes) -> None:
    """Bytes straight into ``req``, behind the client's back (misbehaviour)."""
    view = RingPage(page)
    try:
        assert GuestRing(view).write_requests(data) == len(data)
    finally:
        view.release()


def indices(page: bytearray) -> tuple[int, int, int, int]:
    iface = RingPage(page).iface
    return iface.req_cons, iface.req_prod, iface.rsp_cons, iface.rsp_prod


# -- the op set over the ring ----------------------------------------------------


async def test_relative_paths_write_read_directory(client: Client, setup: Setup) -> None:
    await client.write("name", "guest5")
    await client.write("device/vif/0/state", b"4")
    assert await client.read("name") == b"guest5"
    assert await client.read(f"{HOME}/name") == b"guest5"
    assert await client.directory("device/vif") == ["0"]
    assert sorted(await client.directory(HOME)) == ["device", "name"]
    reply = setup.server.toolstack(Op.READ, f"{HOME}/device/vif/0/state\0".encode())
    assert reply.payload == b"4"
    await client.rm("device")
    with pytest.raises(XenstoreError) as info:
        await client.read("device/vif/0/state")
    assert info.value.name == "ENOENT"
    assert await client.get_domain_path(DOMID) == HOME


async def test_permissions_apply_to_the_domain(client: Client) -> None:
    with pytest.raises(XenstoreError) as info:
        await client.write("/local/domain/6/x", "no")
    assert info.value.name == "EACCES"
    await client.write("x", "yes")
    assert await client.get_perms("x") == [f"n{DOMID}"]


async def test_watch_events(client: Client, setup: Setup) -> None:
    async with client.watch("data", token="tok") as events:
        first = await events.receive()
        assert (first.path, first.token) == ("data", "tok")
        await client.write("data/a", "1")
        event = await events.receive()
        assert (event.path, event.token) == ("data/a", "tok")
        # A change by the toolstack reaches the guest through the ring.
        setup.server.toolstack(Op.WRITE, f"{HOME}/data/b\0two".encode())
        event = await events.receive()
        assert (event.path, event.token) == ("data/b", "tok")
    assert await client.read("data/b") == b"two"


async def test_transaction_commit_and_conflict_retry(client: Client, setup: Setup) -> None:
    await client.write("counter", "0")
    async with client.transaction() as tx:
        value = int(await tx.read("counter"))
        await tx.write("counter", str(value + 1))
    assert await client.read("counter") == b"1"

    attempts = 0

    async def bump(tx: Transaction) -> int:
        nonlocal attempts
        attempts += 1
        value = int(await tx.read("counter"))
        if attempts == 1:  # the toolstack writes under our feet: EAGAIN
            setup.server.toolstack(Op.WRITE, f"{HOME}/counter\0{10}".encode())
        await tx.write("counter", str(value + 1))
        return value + 1

    assert await client.run_transaction(bump) == 11
    assert attempts == 2
    assert await client.read("counter") == b"11"


async def test_large_values_wrap_the_ring_many_times(client: Client, setup: Setup) -> None:
    rng = random.Random(3)
    size = PAYLOAD_MAX - len("big/00") - 1  # the largest value a WRITE can carry
    values = [rng.randbytes(size) for _ in range(12)]
    for i, value in enumerate(values):
        await client.write(f"big/{i:02}", value)
    for i, value in enumerate(values):
        assert await client.read(f"big/{i:02}") == value
    req_cons, req_prod, rsp_cons, rsp_prod = indices(setup.page)
    assert req_cons == req_prod > 12 * PAYLOAD_MAX  # >48 trips round req[]
    assert rsp_cons == rsp_prod > 12 * size
    assert max(setup.server.read_sizes) <= RING_SIZE


async def test_many_pipelined_requests(client: Client, setup: Setup) -> None:
    count = 400
    writes = [client.send_request(Op.WRITE, f"p/{i}\0v{i}".encode()) for i in range(count)]
    reads = [client.send_request(Op.READ, f"p/{i}\0".encode()) for i in range(count)]
    assert client.connection.in_flight == 2 * count
    for reply in writes:
        assert await reply == b"OK\0"
    assert [await reply for reply in reads] == [f"v{i}".encode() for i in range(count)]
    # Far more than one ring's worth was in flight; it went through in pieces.
    sent = sum(setup.server.read_sizes)
    assert sent > 10 * RING_SIZE
    assert len(setup.server.read_sizes) >= sent // RING_SIZE
    assert [p.req_id for p in setup.server.requests] == sorted(
        p.req_id for p in setup.server.requests
    )


async def test_concurrent_tasks(client: Client) -> None:
    results: dict[int, list[bytes]] = {}

    async def worker(n: int) -> None:
        got = []
        for i in range(25):
            await client.write(f"w{n}/{i}", f"{n}-{i}" * (1 + (n * i) % 50))
            got.append(await client.read(f"w{n}/{i}"))
        results[n] = got

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(worker, n)
    for n in range(8):
        assert results[n] == [(f"{n}-{i}" * (1 + (n * i) % 50)).encode() for i in range(25)]
    assert sorted(await client.directory("w3"), key=int) == [str(i) for i in range(25)]


async def test_indices_need_not_start_at_zero(watchdog: None) -> None:
    s = Setup()
    iface = RingPage(s.page).iface
    start = 0xFFFF_FF00  # wraps the u32 indices after 256 bytes
    iface.req_cons = iface.req_prod = iface.rsp_cons = iface.rsp_prod = start
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.server.run)
        async with open_ring_client(s.page, s.guest_bell, poll_interval=None) as client:
            await client.write("wrap", b"x" * 3000)
            assert await client.read("wrap") == b"x" * 3000
        nursery.cancel_scope.cancel()
    assert iface.req_prod < start and iface.rsp_prod < start


# -- the stream itself -------------------------------------------------------------


async def test_send_waits_for_space_and_receive_for_data(watchdog: None) -> None:
    page = bytearray(PAGE_SIZE)
    guest_bell, server_bell = doorbell_pair()
    server = ServerRing(RingPage(page))
    stream = RingStream(page, guest_bell, poll_interval=None)
    data = bytes(range(256)) * 10  # 2560 bytes: 2.5 rings
    received = bytearray()

    async def drain_requests() -> None:
        while len(received) < len(data):
            await server_bell.wait()
            received.extend(server.read_requests())
            if server.take_notify():
                server_bell.notify()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_requests)
        await stream.send_all(data)
    assert bytes(received) == data

    async def reply_later() -> None:
        await trio.sleep(0.01)
        server.write_responses(b"hello")
        server_bell.notify()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reply_later)
        assert await stream.receive_some(3) == b"hel"
        assert await stream.receive_some() == b"lo"
    await stream.aclose()


async def test_wait_send_all_might_not_block(watchdog: None) -> None:
    page = bytearray(PAGE_SIZE)
    guest_bell, server_bell = doorbell_pair()
    server = ServerRing(RingPage(page))
    stream = RingStream(page, guest_bell, poll_interval=None)
    await stream.wait_send_all_might_not_block()  # empty ring: at once
    await stream.send_all(b"x" * RING_SIZE)
    with trio.testing.assert_checkpoints():
        with trio.move_on_after(0.02) as scope:
            await stream.wait_send_all_might_not_block()
    assert scope.cancelled_caught
    server.read_requests(1)
    server_bell.notify()
    await stream.wait_send_all_might_not_block()
    await stream.aclose()


async def test_one_task_at_a_time_and_aclose_wakes_waiters(watchdog: None) -> None:
    page = bytearray(PAGE_SIZE)
    guest_bell, _ = doorbell_pair()
    stream = RingStream(page, guest_bell, poll_interval=None)
    outcomes: list[type[BaseException]] = []

    async def receive() -> None:
        try:
            await stream.receive_some()
        except BaseException as exc:
            outcomes.append(type(exc))
            if not isinstance(exc, trio.ClosedResourceError):
                raise

    async def send_into_full_ring() -> None:
        try:
            await stream.send_all(b"y" * (RING_SIZE + 1))
        except trio.ClosedResourceError as exc:
            outcomes.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        nursery.start_soon(send_into_full_ring)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.receive_some()
        with pytest.raises(trio.BusyResourceError):
            await stream.send_all(b"z")
        await stream.aclose()
    assert outcomes == [trio.ClosedResourceError, trio.ClosedResourceError]
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"after")
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()
    await stream.aclose()  # idempotent
    page.extend(b"!")  # the view was released: the bytearray may resize again


async def test_lost_kicks_are_recovered_by_polling(watchdog: None) -> None:
    s = Setup()
    s.server.doorbell.drop = True  # every kick to the guest is lost
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.server.run)
        # A re-poll finds the replies (a value that needs many rounds too) ...
        async with open_ring_client(s.page, s.guest_bell, poll_interval=0.002) as client:
            await client.write("quiet", b"q" * 2000)
            assert await client.read("quiet") == b"q" * 2000
        # ... whereas trusting the kicks alone, a reply is never seen.
        stream = RingStream(s.page, s.guest_bell, poll_interval=None)
        received: list[bytes] = []

        async def receive() -> None:
            with trio.move_on_after(0.1):
                received.append(await stream.receive_some())

        async with trio.open_nursery() as inner:
            inner.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()  # waiting for a kick
            await stream.send_all(Packet(Op.READ, 1, 0, b"quiet\0").encode())
        assert received == []
        _, _, rsp_cons, rsp_prod = indices(s.page)
        assert rsp_prod != rsp_cons  # the reply is there, unseen
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert s.server.doorbell.kicks_sent > 0


# -- a misbehaving or failing server ---------------------------------------------


@pytest.mark.parametrize("value", [RingError.PROTO, RingError.COMM, 77])
async def test_error_field_breaks_the_connection(watchdog: None, value: int) -> None:
    s = Setup(poll_interval=0.01)
    async with s.stream() as stream, open_stream_client(stream) as client:
        RingPage(s.page).iface.error = int(value)  # no kick: found by the re-poll
        with pytest.raises(ConnectionClosed) as info:
            await client.read("anything")
    assert f"error field to {describe_ring_error(value)}" in str(info.value)
    assert stream.broken is not None


async def test_guest_breaking_the_framing_is_ignored_by_the_server(
    client: Client, setup: Setup
) -> None:
    await client.write("before", "1")
    # Misbehave behind the client's back: a header announcing 5000 bytes.
    header = Packet(Op.WRITE, 99, 0, b"").encode()[:12] + (5000).to_bytes(4, "little")
    write_raw_requests(setup.page, header)
    setup.server.pump()
    assert isinstance(setup.server.ignored, ProtocolError)
    with pytest.raises(ConnectionClosed) as info:
        await client.read("before")
    assert "PROTO (3)" in str(info.value)


async def test_bad_response_indices(client: Client, setup: Setup) -> None:
    await client.write("ok", "1")
    iface = RingPage(setup.page).iface
    iface.rsp_prod = (iface.rsp_cons + RING_SIZE + 1) & 0xFFFF_FFFF
    setup.server.doorbell.notify()
    with pytest.raises(ConnectionClosed) as info:
        await client.read("ok")
    assert "bad ring indices" in str(info.value)
    assert "response ring" in str(info.value)


async def test_bad_request_indices_seen_by_the_guest(watchdog: None) -> None:
    page = bytearray(PAGE_SIZE)
    guest_bell, _ = doorbell_pair()
    iface = RingPage(page).iface
    iface.req_cons = 5000  # cons ahead of prod: a broken server
    stream = RingStream(page, guest_bell, poll_interval=None)
    with pytest.raises(trio.BrokenResourceError, match="bad ring indices.*request ring"):
        await stream.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError):
        await stream.wait_send_all_might_not_block()
    await stream.aclose()


def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RingStream(bytearray(PAGE_SIZE), MemoryDoorbell(), poll_interval=0)
    with pytest.raises(ValueError):
        RingStream(bytearray(100), MemoryDoorbell())
