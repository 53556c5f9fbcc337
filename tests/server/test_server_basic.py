"""The daemon on its Unix socket: listening, serving, concurrency, shutdown."""

import os
import socket
import stat

import pytest
import trio
from server_harness import RawClient, running_server

from pyxenstored.config import Config
from pyxenstored.protocol.ops import Op
from pyxenstored.server import Server, serve
from pyxenstored.server.listener import SocketInUseError


async def test_socket_is_mode_0600_and_serves(sdir: str) -> None:
    async with running_server(sdir) as server:
        path = os.path.join(sdir, "sock")
        assert server.socket_path == path
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        client = await RawClient.connect(path)
        await client.write("/a", b"hello")
        assert await client.read("/a") == b"hello"
        reply = await client.request(Op.READ, b"/nonexistent\0")
        assert (reply.type, reply.payload) == (Op.ERROR, b"ENOENT\0")
        await client.aclose()


async def test_reply_echoes_req_and_tx_ids(sdir: str) -> None:
    async with running_server(sdir):
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        await client.send(Op.READ, b"/tool\0", req_id=0xDEADBEEF)
        reply = await client.receive()
        assert (reply.type, reply.req_id, reply.tx_id) == (Op.READ, 0xDEADBEEF, 0)
        await client.aclose()


async def test_pipelined_requests_are_answered_in_order(sdir: str) -> None:
    async with running_server(sdir):
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        await client.write("/p", b"v")
        ids = [await client.send(Op.READ, b"/p\0") for _ in range(200)]
        replies = [await client.receive() for _ in ids]
        assert [r.req_id for r in replies] == ids
        assert all(r.payload == b"v" for r in replies)
        await client.aclose()


async def test_split_and_coalesced_packets(sdir: str) -> None:
    """Packets arriving byte by byte, or many in one write, are all answered."""
    async with running_server(sdir):
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        from pyxenstored.protocol.wire import encode

        data = encode(Op.WRITE, 1, 0, b"/s\0x") + encode(Op.READ, 2, 0, b"/s\0")
        for i in range(len(data)):
            await client.stream.send_all(data[i : i + 1])
            await trio.sleep(0)
        first, second = await client.receive(), await client.receive()
        assert (first.req_id, first.payload) == (1, b"OK\0")
        assert (second.req_id, second.payload) == (2, b"x")
        await client.aclose()


async def test_many_concurrent_clients(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir) as server:

        async def one(i: int) -> None:
            client = await RawClient.connect(path)
            for j in range(5):
                await client.write(f"/c/{i}", str(j).encode())
                assert await client.read(f"/c/{i}") == str(j).encode()
            await client.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        with trio.fail_after(5):
            while server.connection_count:
                await trio.sleep(0.01)


async def test_watch_event_reaches_other_connection(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir):
        watcher = await RawClient.connect(path)
        writer = await RawClient.connect(path)
        reply = await watcher.request(Op.WATCH, b"/w\0tok\0")
        assert reply.payload == b"OK\0"
        first = await watcher.receive()  # the initial event
        assert (first.type, first.payload) == (Op.WATCH_EVENT, b"/w\0tok\0")
        await writer.write("/w/x", b"1")
        with trio.fail_after(5):
            event = await watcher.receive()
        assert (event.type, event.req_id, event.payload) == (Op.WATCH_EVENT, 0, b"/w/x\0tok\0")
        await watcher.aclose()
        await writer.aclose()


async def test_disconnect_drops_the_engine_connection(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir) as server:
        client = await RawClient.connect(path)
        await client.read("/tool")
        assert server.connection_count == 1
        await client.aclose()
        with trio.fail_after(5):
            while server.connection_count:
                await trio.sleep(0.01)
        assert server.engine.queued_replies(1) == 0


async def test_stale_socket_is_replaced(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    async with running_server(sdir):
        client = await RawClient.connect(path)
        await client.read("/tool")
        await client.aclose()


async def test_live_daemon_socket_is_not_taken_over(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir):
        async with trio.open_nursery() as nursery:
            with pytest.raises(SocketInUseError):
                await nursery.start(serve, Config(), path)
        client = await RawClient.connect(path)  # the first daemon still serves
        await client.read("/tool")
        await client.aclose()


async def test_non_socket_at_path_is_refused(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    with open(path, "w") as file:
        file.write("precious")
    async with trio.open_nursery() as nursery:
        with pytest.raises(FileExistsError):
            await nursery.start(serve, Config(), path)
    with open(path) as file:
        assert file.read() == "precious"


async def test_cancelling_closes_connections_and_removes_socket(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    async with running_server(sdir):
        client = await RawClient.connect(path)
        await client.read("/tool")
    assert not os.path.exists(path)
    with trio.fail_after(5):
        await client.expect_eof()
    with pytest.raises(OSError):
        await trio.open_unix_socket(path)


async def test_shutdown_method_makes_serve_return(sdir: str) -> None:
    path = os.path.join(sdir, "sock")
    returned = trio.Event()

    async def run(task_status: trio.TaskStatus[Server]) -> None:
        await serve(Config(), path, task_status=task_status)
        returned.set()

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(run)
        client = await RawClient.connect(path)
        await client.read("/tool")
        server.shutdown()
        with trio.fail_after(5):
            await returned.wait()
            await client.expect_eof()
    assert not os.path.exists(path)
    assert server.connection_count == 0


async def test_socket_of_a_newer_daemon_is_left_alone(sdir: str) -> None:
    """On exit only our own socket file is removed (not one that replaced it)."""
    path = os.path.join(sdir, "sock")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        async with running_server(sdir):
            os.unlink(path)
            other.bind(path)
        assert os.path.exists(path)
    finally:
        other.close()


async def test_engine_crash_closes_only_that_connection(sdir: str) -> None:
    """An internal error is logged and costs the client its connection, nothing more."""
    from server_harness import CountingEngine

    class Fragile(CountingEngine):
        def handle(self, conn_id: int, packet):  # type: ignore[no-untyped-def]
            if packet.payload == b"/boom\0":
                raise RuntimeError("engine bug")
            super().handle(conn_id, packet)

    config = Config()
    path = os.path.join(sdir, "sock")
    async with running_server(sdir, config, engine=Fragile(config)):
        victim = await RawClient.connect(path)
        bystander = await RawClient.connect(path)
        await victim.send(Op.READ, b"/boom\0")
        with trio.fail_after(5):
            await victim.expect_eof()
        assert await bystander.read("/tool") == b""
        fresh = await RawClient.connect(path)
        assert await fresh.read("/tool") == b""
        await bystander.aclose()
        await fresh.aclose()
