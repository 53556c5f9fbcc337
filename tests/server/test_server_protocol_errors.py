"""Bad framing closes that one connection; every other client keeps being served."""

import logging
import os

import pytest
import trio
from server_harness import RawClient, header, running_server

from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import PAYLOAD_MAX, encode


async def test_oversized_header_closes_only_that_connection(
    sdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir) as server:
        good = await RawClient.connect(path)
        bad = await RawClient.connect(path)
        await good.write("/x", b"1")
        assert server.connection_count == 2
        with caplog.at_level(logging.INFO, logger="pyxenstored"):
            await bad.stream.send_all(header(Op.READ, 1, 0, PAYLOAD_MAX + 1))
            with trio.fail_after(5):
                await bad.expect_eof()
        assert any("protocol error" in r.getMessage() for r in caplog.records)
        with trio.fail_after(5):
            while server.connection_count != 1:
                await trio.sleep(0.01)
        assert await good.read("/x") == b"1"
        # and new clients are welcome
        fresh = await RawClient.connect(path)
        assert await fresh.read("/x") == b"1"
        await good.aclose()
        await fresh.aclose()


async def test_requests_before_the_bad_header_are_handled(sdir: str) -> None:
    """Complete packets ahead of the bad header in the same read were valid requests."""
    path = os.path.join(sdir, "sock")
    async with running_server(sdir):
        bad = await RawClient.connect(path)
        data = encode(Op.WRITE, 1, 0, b"/before\0y") + header(Op.READ, 2, 0, 100000)
        await bad.stream.send_all(data)
        with trio.fail_after(5):
            reply = await bad.receive()  # the good request's reply is sent first
            assert (reply.type, reply.req_id, reply.payload) == (Op.WRITE, 1, b"OK\0")
            await bad.expect_eof()
        good = await RawClient.connect(path)
        # C handles requests one by one and closes only at the bad header.
        assert await good.read("/before") == b"y"
        await good.aclose()


async def test_exactly_payload_max_is_accepted(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir):
        client = await RawClient.connect(path)
        value = b"v" * (PAYLOAD_MAX - len(b"/big\0"))
        reply = await client.request(Op.WRITE, b"/big\0" + value)
        assert reply.type == Op.WRITE
        assert await client.read("/big") == value
        await client.aclose()


async def test_client_vanishing_mid_packet(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir) as server:
        half = await RawClient.connect(path)
        await half.stream.send_all(encode(Op.WRITE, 1, 0, b"/h\0value")[:10])
        await half.aclose()
        with trio.fail_after(5):
            while server.connection_count:
                await trio.sleep(0.01)
        client = await RawClient.connect(path)
        reply = await client.request(Op.READ, b"/h\0")
        assert reply.payload == b"ENOENT\0"
        await client.aclose()


async def test_client_resetting_while_replies_are_pending(sdir: str) -> None:
    """A client that sends and closes at once must not disturb the daemon."""
    path = os.path.join(sdir, "sock")
    async with running_server(sdir) as server:
        for _ in range(20):
            client = await RawClient.connect(path)
            await client.stream.send_all(
                b"".join(encode(Op.READ, i, 0, b"/tool\0") for i in range(100))
            )
            await client.aclose()
        with trio.fail_after(5):
            while server.connection_count:
                await trio.sleep(0.01)
        client = await RawClient.connect(path)
        assert await client.read("/tool") == b""
        await client.aclose()
