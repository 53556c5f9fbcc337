"""Output order when a batch's output is sent at once (``deliver_output``)
and the writer finishes what the socket did not take, or sends other
connections' watch events."""

import os

import trio
from server_harness import RawClient, running_server

from pyxenstored.config import Config
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import encode

VALUE = b"y" * 4000
COUNT = 600  # ~2.4 MB of replies: far more than a socket buffer holds


async def test_replies_stay_in_order_when_the_socket_fills(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir, Config()) as _:
        client = await RawClient.connect(path)
        await client.write("/big", VALUE)
        # Everything sent before reading anything: the daemon's writes block
        # part-way, and the rest must follow in order.
        burst = b"".join(encode(Op.READ, 1000 + i, 0, b"/big\0") for i in range(COUNT))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.stream.send_all, burst)
            with trio.fail_after(30):
                for i in range(COUNT):
                    reply = await client.receive()
                    assert (reply.type, reply.req_id, reply.payload) == (Op.READ, 1000 + i, VALUE)
        assert (await client.read("/big")) == VALUE
        await client.aclose()


async def test_events_and_own_replies_interleave_in_order(sdir: str) -> None:
    """A watcher busy with its own requests gets each event after the reply
    that preceded it, and every reply in request order."""
    path = os.path.join(sdir, "sock")
    async with running_server(sdir, Config()) as _:
        watcher = await RawClient.connect(path)
        writer = await RawClient.connect(path)
        reply = await watcher.request(Op.WATCH, b"/w\0tok\0")
        assert reply.type == Op.WATCH
        initial = await watcher.receive()
        assert initial.type == Op.WATCH_EVENT
        events: list[bytes] = []
        for i in range(50):
            await writer.write(f"/w/{i}", b"v")
            req_id = await watcher.send(Op.READ, f"/w/{i}\0".encode())
            while True:
                packet = await watcher.receive()
                if packet.type == Op.WATCH_EVENT:
                    events.append(packet.payload.split(b"\0")[0])
                    continue
                assert (packet.type, packet.req_id, packet.payload) == (Op.READ, req_id, b"v")
                break
        # The write's event is queued before the watcher's next request is
        # even sent, so each arrives ahead of that request's reply.
        assert events == [f"/w/{i}".encode() for i in range(50)]
        await watcher.aclose()
        await writer.aclose()


async def test_a_watcher_that_stops_reading_gets_every_event_in_order(sdir: str) -> None:
    """Events go out from the writer's batch while the watcher's socket takes
    them; once it is full the watcher's own task takes over, and nothing is
    lost or reordered in the hand-off (nor is the writer held up)."""
    path = os.path.join(sdir, "sock")
    long_name = "n" * 200
    count = 3000  # ~0.7 MB of events: more than the socket's buffers
    async with running_server(sdir, Config()) as _:
        watcher = await RawClient.connect(path)
        writer = await RawClient.connect(path)
        await writer.write(f"/w/{long_name}", b"")
        assert (await watcher.request(Op.WATCH, b"/w\0tok\0")).type == Op.WATCH
        assert (await watcher.receive()).type == Op.WATCH_EVENT
        with trio.fail_after(60):
            for i in range(count):
                await writer.write(f"/w/{long_name}/{i}", b"v")
            paths = []
            while len(paths) < count:
                event = await watcher.receive()
                assert event.type == Op.WATCH_EVENT
                paths.append(event.payload.split(b"\0")[0])
        assert paths == [f"/w/{long_name}/{i}".encode() for i in range(count)]
        await watcher.aclose()
        await writer.aclose()
