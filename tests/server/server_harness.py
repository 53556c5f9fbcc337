"""Helpers for the server tests: a daemon in the test's nursery and a raw wire client."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio

from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, Packet, encode
from pyxenstored.server import Server, serve


@contextmanager
def short_tmpdir() -> Iterator[str]:
    """A temporary directory with a short path (sun_path holds 107 bytes)."""
    path = tempfile.mkdtemp(prefix="pyxs-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class CountingEngine(Engine):
    """The real engine, counting the requests it was handed."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.handled = 0

    def handle(self, conn_id: int, packet: Packet) -> None:
        self.handled += 1
        super().handle(conn_id, packet)


@asynccontextmanager
async def running_server(
    directory: str, config: Config | None = None, **kwargs: Any
) -> AsyncIterator[Server]:
    """``serve`` on ``<directory>/sock`` in a nursery; cancelled on exit."""
    config = config if config is not None else Config()
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            functools.partial(serve, config, os.path.join(directory, "sock"), **kwargs)
        )
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


class RawClient:
    """Speaks the wire protocol over a Unix socket, nothing more."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = Decoder()
        self.packets: list[Packet] = []
        self._next_req = 1

    @classmethod
    async def connect(cls, path: str) -> RawClient:
        return cls(await trio.open_unix_socket(path))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send(self, op: int, payload: bytes, req_id: int | None = None, tx_id: int = 0) -> int:
        if req_id is None:
            req_id = self._next_req
            self._next_req += 1
        await self.stream.send_all(encode(op, req_id, tx_id, payload))
        return req_id

    async def receive(self) -> Packet:
        """The next packet; raises EOFError when the daemon closed the connection."""
        while not self.packets:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("connection closed by the daemon")
            self.packets.extend(self.decoder.feed(data))
        return self.packets.pop(0)

    async def request(self, op: int, payload: bytes, tx_id: int = 0) -> Packet:
        req_id = await self.send(op, payload, tx_id=tx_id)
        while True:
            packet = await self.receive()
            if packet.type != Op.WATCH_EVENT:
                assert packet.req_id == req_id
                return packet

    async def read(self, path: str) -> bytes:
        reply = await self.request(Op.READ, path.encode() + b"\0")
        assert reply.type == Op.READ, reply
        return reply.payload

    async def write(self, path: str, value: bytes) -> None:
        reply = await self.request(Op.WRITE, path.encode() + b"\0" + value)
        assert reply.type == Op.WRITE, reply

    async def control(self, *args: str) -> Packet:
        return await self.request(Op.CONTROL, b"".join(a.encode() + b"\0" for a in args))

    async def expect_eof(self) -> None:
        """Wait until the daemon closes the connection (replies before that are skipped)."""
        try:
            while True:
                await self.receive()
        except (EOFError, trio.BrokenResourceError):
            return


def header(op: int, req_id: int, tx_id: int, length: int) -> bytes:
    """A bare header, its length field unchecked."""
    return HEADER.pack(op, req_id, tx_id, length)
