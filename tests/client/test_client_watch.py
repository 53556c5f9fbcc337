"""Watches as async iterators: routing, the initial event, unwatch, bounds."""

import pytest
import trio
import trio.testing
from client_fake_peer import FakePeer, event_bytes, reply_bytes

from pyxenstored.client import Client, ConnectionClosed, WatchEvent, XenstoreError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet, encode


def watch_server(request: Packet) -> bytes:
    """OK every request; after WATCH, the immediate event (spec 5.1)."""
    data = reply_bytes(request, b"OK\0")
    if request.type == Op.WATCH:
        path, token = request.payload.split(b"\0")[:2]
        data += encode(Op.WATCH_EVENT, 0, 0, path + b"\0" + token + b"\0")
    return data


async def test_watch_yields_initial_event_then_routed_events(
    pair: tuple[Client, FakePeer],
) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, watch_server)
        async with client.watch("/a", "tok") as events:
            assert await events.receive() == WatchEvent("/a", "tok")
            await peer.event("/a/b", "tok")
            await peer.event("/a", "tok")
            received = [await events.receive(), await events.receive()]
        nursery.cancel_scope.cancel()
    assert received == [WatchEvent("/a/b", "tok"), WatchEvent("/a", "tok")]
    watch, unwatch = peer.requests
    assert (watch.type, watch.payload) == (Op.WATCH, b"/a\0tok\0")
    assert (unwatch.type, unwatch.payload) == (Op.UNWATCH, b"/a\0tok\0")


async def test_async_for_ends_when_the_watch_is_left(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    seen: list[WatchEvent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, watch_server)
        async with client.watch("/a", "t") as events:
            await peer.event("/a/1", "t")
            await peer.event("/a/2", "t")
            async for event in events:
                seen.append(event)
                if len(seen) == 3:
                    break
        # After exit, iteration ends instead of blocking.
        with pytest.raises(StopAsyncIteration):
            await events.__anext__()
        nursery.cancel_scope.cancel()
    assert [e.path for e in seen] == ["/a", "/a/1", "/a/2"]


async def test_events_go_to_the_right_iterator(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, watch_server)
        async with client.watch("/x") as xs, client.watch("/y") as ys:
            assert xs.token != ys.token  # generated tokens are unique
            assert (await xs.receive()).path == "/x"
            assert (await ys.receive()).path == "/y"
            await peer.event("/y/1", ys.token)
            await peer.event("/x/1", xs.token)
            await peer.event("/y/2", ys.token)
            assert await ys.receive() == WatchEvent("/y/1", ys.token)
            assert await ys.receive() == WatchEvent("/y/2", ys.token)
            assert await xs.receive() == WatchEvent("/x/1", xs.token)
            with pytest.raises(trio.WouldBlock):
                xs.receive_nowait()
        nursery.cancel_scope.cancel()


async def test_shared_token_is_routed_by_path(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, watch_server)
        async with client.watch("/a", "same") as a, client.watch("/b", "same") as b:
            assert (await a.receive()).path == "/a"
            assert (await b.receive()).path == "/b"
            await peer.event("/b/child", "same")
            await peer.event("/a/child", "same")
            await peer.event("/elsewhere", "same")  # matches neither: both get it
            assert [(await a.receive()).path, (await a.receive()).path] == [
                "/a/child",
                "/elsewhere",
            ]
            assert [(await b.receive()).path, (await b.receive()).path] == [
                "/b/child",
                "/elsewhere",
            ]
        nursery.cancel_scope.cancel()


async def test_special_watch_with_depth(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, watch_server)
        async with client.watch("@releaseDomain", depth=1) as events:
            assert (await events.receive()).path == "@releaseDomain"
            await peer.event("@releaseDomain/7", events.token)
            assert (await events.receive()).path == "@releaseDomain/7"
        nursery.cancel_scope.cancel()
    assert peer.requests[0].payload == f"@releaseDomain\0{events.token}\x001\0".encode()


async def test_events_after_unwatch_are_dropped(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, watch_server)
        async with client.watch("/a", "t"):
            pass
        await peer.event("/a", "t")
        await client.write("/sync", b"")  # the event was read before this reply
        nursery.cancel_scope.cancel()
    assert client.watches.unrouted == 1


async def test_full_queue_drops_events_without_blocking_replies(
    pair: tuple[Client, FakePeer],
) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, watch_server)
        async with client.watch("/a", "t", max_queued=3) as events:
            await peer.send(b"".join(event_bytes(f"/a/{i}", "t") for i in range(10)))
            # The reader is not stuck: a request still gets its reply.
            assert await client.read("/a") == b"OK\0"
            assert events.dropped == 8  # initial event + /a/0 + /a/1 were kept
            kept = [events.receive_nowait() for _ in range(3)]
            assert [e.path for e in kept] == ["/a", "/a/0", "/a/1"]
            # Room again: new events are queued.
            await peer.event("/a/new", "t")
            assert (await events.receive()).path == "/a/new"
        nursery.cancel_scope.cancel()


async def test_watch_refused_by_server_raises_and_unsubscribes(
    pair: tuple[Client, FakePeer],
) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            await peer.error(await peer.receive(), "EEXIST")

        nursery.start_soon(server)
        with pytest.raises(XenstoreError, match="EEXIST"):
            async with client.watch("/a", "dup"):
                pytest.fail("body must not run")
    await peer.event("/a", "dup")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer)
        await client.mkdir("/sync")
    assert client.watches.unrouted == 1
    assert len(peer.requests) == 2  # WATCH, MKDIR: no UNWATCH for a failed watch


async def test_unwatch_enoent_on_exit_is_ignored(pair: tuple[Client, FakePeer]) -> None:
    # After RESET_WATCHES the server no longer knows the watch.
    client, peer = pair

    def server(request: Packet) -> bytes:
        if request.type == Op.UNWATCH:
            return reply_bytes(request, b"ENOENT\0", Op.ERROR)
        return watch_server(request)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        async with client.watch("/a", "t"):
            await client.reset_watches()
        nursery.cancel_scope.cancel()
    assert [r.type for r in peer.requests] == [Op.WATCH, Op.RESET_WATCHES, Op.UNWATCH]


async def test_exit_by_exception_unwatches_without_waiting(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer)
        with pytest.raises(KeyError):
            async with client.watch("/a", "t"):
                raise KeyError("body failed")
    # The UNWATCH is on the wire although nobody waited for its reply.
    unwatch = await peer.receive()
    assert (unwatch.type, unwatch.payload) == (Op.UNWATCH, b"/a\0t\0")


async def test_cancelled_watch_still_unwatches(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    with trio.move_on_after(0.05):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.answer)
            async with client.watch("/a", "t") as events:
                async for _ in events:
                    pass  # no event ever comes: blocks until cancelled
    unwatch = await peer.receive()
    assert (unwatch.type, unwatch.payload) == (Op.UNWATCH, b"/a\0t\0")


async def test_connection_close_ends_iteration_with_error(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer)
        async with client.watch("/a", "t") as events:
            await peer.event("/a/queued", "t")
            await peer.close()
            # Events already received are still delivered, then the error.
            assert (await events.receive()).path == "/a/queued"
            with pytest.raises(ConnectionClosed):
                await events.receive()
            with pytest.raises(ConnectionClosed):
                async for _ in events:
                    pass


async def test_watch_on_closed_connection_fails(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    await peer.close()
    await trio.testing.wait_all_tasks_blocked()
    assert client.closed
    with pytest.raises(ConnectionClosed):
        async with client.watch("/a"):
            pytest.fail("body must not run")
    assert not client.watches._by_token


async def test_malformed_event_is_counted(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    await peer.send(encode(Op.WATCH_EVENT, 0, 0, b"/only-a-path\0"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer)
        await client.mkdir("/sync")
    assert client.watches.malformed == 1
