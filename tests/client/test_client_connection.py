"""The multiplexer: concurrency, req_id matching, pipelining, closing."""

from pathlib import Path

import pytest
import trio
import trio.testing
from client_fake_peer import FakePeer, reply_bytes

from pyxenstored.client import (
    Client,
    ConnectionClosed,
    XenstoreError,
    open_client,
    open_stream_client,
)
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, Packet, encode


async def test_concurrent_requests_are_matched_by_req_id(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    results: dict[str, bytes] = {}

    async def reader(name: str) -> None:
        results[name] = await client.read(f"/{name}")

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c", "d"):
            nursery.start_soon(reader, name)
        requests = await peer.receive_many(4)
        assert len({r.req_id for r in requests}) == 4
        # Answer in reverse order, each with the value of its own path.
        for request in reversed(requests):
            await peer.reply(request, b"value of " + request.payload[:-1])
    assert results == {name: f"value of /{name}".encode() for name in "abcd"}


async def test_send_request_returns_awaitable_pending_reply(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    first = client.send_request(Op.READ, b"/1\0")
    second = client.send_request(Op.READ, b"/2\0", tx_id=3)
    assert not first.done and not second.done
    assert client.connection.in_flight == 2
    r1, r2 = await peer.receive_many(2)
    assert (r2.tx_id, r2.payload) == (3, b"/2\0")
    await peer.reply(r2, b"two")
    assert await second == b"two"
    assert not first.done
    await peer.reply(r1, b"one")
    assert await first.wait() == b"one"
    # The raw packet is available too, header fields included.
    packet = await second.wait_packet()
    assert packet == Packet(Op.READ, r2.req_id, 3, b"two")
    assert client.connection.in_flight == 0


async def test_error_reply_packet_is_available_raw(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    pending = client.send_request(Op.RM, b"/\0")
    await peer.error(await peer.receive(), "EINVAL")
    packet = await pending.wait_packet()
    assert (packet.type, packet.payload) == (Op.ERROR, b"EINVAL\0")
    with pytest.raises(XenstoreError, match="EINVAL"):
        await pending


async def test_pipeline_depth_64_sends_everything_before_any_reply(
    pair: tuple[Client, FakePeer],
) -> None:
    client, peer = pair
    requests = [(Op.READ, f"/n{i}\0".encode()) for i in range(64)]
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            # All 64 requests arrive while no reply has been sent yet ...
            received = await peer.receive_many(64)
            assert [r.payload for r in received] == [p for _, p in requests]
            # ... in far fewer writes than requests (the writer batches).
            assert len(peer.read_sizes) < 64
            # Reply in a scrambled order, all in one write.
            order = received[1::2] + received[0::2]
            await peer.send(b"".join(reply_bytes(r, r.payload[1:-1]) for r in order))

        nursery.start_soon(server)
        replies = await client.pipeline(requests)
    assert replies == [f"n{i}".encode() for i in range(64)]


async def test_pipeline_raises_first_error(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            a, b, c = await peer.receive_many(3)
            await peer.reply(a, b"ok")
            await peer.error(b, "ENOENT")
            await peer.reply(c, b"ok")

        nursery.start_soon(server)
        with pytest.raises(XenstoreError, match="ENOENT"):
            await client.pipeline([(Op.READ, b"/a\0"), (Op.READ, b"/b\0"), (Op.READ, b"/c\0")])


@pytest.mark.usefixtures("watchdog")
async def test_req_ids_skip_ids_still_in_flight() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    peer = FakePeer(server_end)
    async with open_stream_client(client_end) as client:
        client.connection._next_req_id = 2**32 - 2
        held = client.send_request(Op.READ, b"/held\0")  # id 2**32 - 2, never answered
        ids = [client.send_request(Op.READ, b"/x\0").req_id for _ in range(3)]
        assert held.req_id == 2**32 - 2
        assert ids == [2**32 - 1, 1, 2]  # wraps, and never uses 0
        client.connection._next_req_id = 2**32 - 2
        assert client.send_request(Op.READ, b"/y\0").req_id == 3  # skips all in flight
        await peer.receive_many(5)


async def test_cancelled_request_does_not_confuse_later_replies(
    pair: tuple[Client, FakePeer],
) -> None:
    client, peer = pair
    with trio.move_on_after(0.01):
        await client.read("/slow")
    slow = await peer.receive()
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            fast = await peer.receive()
            # The late reply to the abandoned request comes first.
            await peer.reply(slow, b"stale")
            await peer.reply(fast, b"fresh")

        nursery.start_soon(server)
        assert await client.read("/fast") == b"fresh"
    assert client.connection.unmatched_replies == 0
    assert client.connection.in_flight == 0


async def test_reply_with_unknown_req_id_is_counted_and_ignored(
    pair: tuple[Client, FakePeer],
) -> None:
    client, peer = pair
    pending = client.send_request(Op.READ, b"/a\0")
    request = await peer.receive()
    await peer.send(encode(Op.READ, request.req_id + 1000, 0, b"bogus"))
    await peer.reply(request, b"real")
    assert await pending == b"real"
    assert client.connection.unmatched_replies == 1


async def test_server_close_fails_pending_and_later_requests(
    pair: tuple[Client, FakePeer],
) -> None:
    client, peer = pair
    failures: list[ConnectionClosed] = []

    async def waiter(path: str) -> None:
        with pytest.raises(ConnectionClosed) as info:
            await client.read(path)
        failures.append(info.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "/a")
        nursery.start_soon(waiter, "/b")
        await peer.receive_many(2)
        await peer.close()
    assert len(failures) == 2
    assert all("closed by the server" in f.reason for f in failures)
    assert client.closed
    with pytest.raises(ConnectionClosed):
        await client.read("/c")
    with pytest.raises(ConnectionClosed):
        client.send_request(Op.READ, b"/c\0")


async def test_server_framing_violation_closes_connection(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    pending = client.send_request(Op.READ, b"/a\0")
    await peer.receive()
    await peer.send(HEADER.pack(Op.READ, pending.req_id, 0, 5000))
    with pytest.raises(ConnectionClosed) as info:
        await pending
    assert isinstance(info.value.__cause__, ProtocolError)
    assert client.closed


async def test_broken_stream_fails_pending(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    pending = client.send_request(Op.READ, b"/a\0")
    await peer.receive()
    # A reply cut off mid-header, then the end of the stream.
    await peer.send(encode(Op.READ, pending.req_id, 0, b"x")[:7])
    await peer.close()
    with pytest.raises(ConnectionClosed):
        await pending


@pytest.mark.usefixtures("watchdog")
async def test_client_close_fails_pending_and_server_sees_eof() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    peer = FakePeer(server_end)
    async with open_stream_client(client_end) as client:
        pending = client.send_request(Op.READ, b"/a\0")
        await peer.receive()
    assert client.closed
    with pytest.raises(ConnectionClosed, match="closed by the client"):
        await pending
    with pytest.raises(EOFError):
        await peer.receive()


async def test_events_and_replies_interleaved_in_one_read(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            watch = await peer.receive()
            await peer.send(
                reply_bytes(watch, b"OK\0") + encode(Op.WATCH_EVENT, 0, 0, b"/w\0tok\0")
            )
            unwatch = await peer.receive()
            await peer.reply(unwatch, b"OK\0")

        nursery.start_soon(server)
        async with client.watch("/w", "tok") as events:
            assert (await events.receive()).path == "/w"


@pytest.mark.usefixtures("watchdog")
async def test_open_client_over_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen()
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            peer = FakePeer(await listener.accept())
            request = await peer.answer(b"/local/domain/0\0")
            assert (request.type, request.payload) == (Op.GET_DOMAIN_PATH, b"0\0")
            with pytest.raises(EOFError):
                await peer.receive()
            await listener.aclose()

        nursery.start_soon(server)
        async with open_client(path) as client:
            assert await client.get_domain_path(0) == "/local/domain/0"


@pytest.mark.usefixtures("watchdog")
async def test_open_client_uses_xenstored_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XENSTORED_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(OSError):
        async with open_client():
            pass
