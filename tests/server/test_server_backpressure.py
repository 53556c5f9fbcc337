"""A client that never reads its replies gets no more service, and costs bounded memory."""

import os

import trio
from server_harness import CountingEngine, RawClient, running_server

from pyxenstored.config import Config
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER_SIZE, PAYLOAD_MAX, encode

REQUESTS = 10_000
VALUE = b"x" * 4000  # each reply is ~4 KiB: 10,000 of them would be ~40 MiB


async def _flood(path: str, sent: list[int], cancel_scope_box: list[trio.CancelScope]) -> None:
    """Pipeline REQUESTS reads of /big and never read a byte back."""
    client = await RawClient.connect(path)
    with trio.CancelScope() as scope:
        cancel_scope_box.append(scope)
        for i in range(REQUESTS):
            await client.stream.send_all(encode(Op.READ, i, 0, b"/big\0"))
            sent[0] = i + 1
    await client.aclose()


async def test_non_reading_client_is_throttled_and_others_served(sdir: str) -> None:
    config = Config()
    engine = CountingEngine(config)
    path = os.path.join(sdir, "sock")
    async with running_server(sdir, config, engine=engine) as server:
        setup = await RawClient.connect(path)
        await setup.write("/big", VALUE)
        await setup.aclose()
        handled_before = engine.handled

        sent = [0]
        scopes: list[trio.CancelScope] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_flood, path, sent, scopes)
            # Wait until the daemon stops taking requests from the flooder.
            with trio.fail_after(30):
                last = -1
                while engine.handled != last:
                    last = engine.handled
                    await trio.sleep(0.2)
            flooded = engine.handled - handled_before
            assert flooded < REQUESTS
            assert sent[0] < REQUESTS  # the flooder is blocked in send_all

            [flooder] = [c for c in server.connections.values() if c.requests_handled]
            bound = server.reply_bound
            assert bound == config.hard_quotas["outstanding"] == 20
            assert engine.queued_replies(flooder.conn_id) <= bound
            assert flooder.bytes_in_flight <= bound * (HEADER_SIZE + PAYLOAD_MAX)

            # A second client is served promptly all the while.
            other = await RawClient.connect(path)
            with trio.fail_after(5):
                for i in range(50):
                    await other.write(f"/other/{i}", b"v")
                    assert await other.read(f"/other/{i}") == b"v"
            await other.aclose()
            # ... and the flooder got nothing more in the meantime.
            assert engine.handled - handled_before - flooded == 100

            scopes[0].cancel()
        with trio.fail_after(5):
            while server.connection_count:
                await trio.sleep(0.01)


async def test_slow_reader_gets_every_reply_in_order(sdir: str) -> None:
    """Throttling loses nothing: a reader that is merely slow gets all replies."""
    path = os.path.join(sdir, "sock")
    async with running_server(sdir):
        client = await RawClient.connect(path)
        await client.write("/big", VALUE)
        count = 2000

        async def send_all_requests() -> None:
            await client.stream.send_all(
                b"".join(encode(Op.READ, i, 0, b"/big\0") for i in range(count))
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all_requests)
            await trio.sleep(0.5)  # let the daemon stall on us first
            with trio.fail_after(30):
                for i in range(count):
                    reply = await client.receive()
                    assert (reply.req_id, reply.payload) == (i, VALUE)
        await client.aclose()


async def test_reply_bound_defaults_when_outstanding_is_unlimited(sdir: str) -> None:
    config = Config()
    config.hard_quotas["outstanding"] = 0
    async with running_server(sdir, config) as server:
        assert server.reply_bound == 20


async def test_explicit_reply_bound(sdir: str) -> None:
    config = Config()
    engine = CountingEngine(config)
    path = os.path.join(sdir, "sock")
    async with running_server(sdir, config, engine=engine, reply_bound=3) as server:
        client = await RawClient.connect(path)
        await client.write("/big", VALUE)
        before = engine.handled
        await client.stream.send_all(
            b"".join(encode(Op.READ, i, 0, b"/big\0") for i in range(1000))
        )
        await trio.sleep(0.5)
        [conn] = server.connections.values()
        assert engine.queued_replies(conn.conn_id) <= 3
        assert engine.handled - before < 1000
        await client.aclose()
