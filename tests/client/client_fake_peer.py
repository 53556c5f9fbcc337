"""A scripted xenstore server for client tests: it decodes what the client
sends and answers exactly what each test tells it to, byte for byte."""

from collections import deque
from collections.abc import Callable

import trio

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet, encode


def reply_bytes(request: Packet, payload: bytes, type_: int | None = None) -> bytes:
    """A reply echoing the request's req_id and tx_id, as C does."""
    return encode(request.type if type_ is None else type_, request.req_id, request.tx_id, payload)


def error_bytes(request: Packet, name: str) -> bytes:
    return reply_bytes(request, name.encode() + b"\0", Op.ERROR)


def event_bytes(path: str, token: str) -> bytes:
    return encode(Op.WATCH_EVENT, 0, 0, f"{path}\0{token}\0".encode("latin-1"))


Handler = Callable[[Packet], bytes | None]


class FakePeer:
    """The server end of a memory stream pair."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = Decoder()
        self.backlog: deque[Packet] = deque()
        #: Every request received, in order.
        self.requests: list[Packet] = []
        #: Sizes of the reads that delivered requests (for batching checks).
        self.read_sizes: list[int] = []

    async def receive(self) -> Packet:
        """The next request; EOFError when the client closed the stream."""
        while not self.backlog:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.read_sizes.append(len(data))
            self.backlog.extend(self.decoder.feed(bytes(data)))
        request = self.backlog.popleft()
        self.requests.append(request)
        return request

    async def receive_many(self, count: int) -> list[Packet]:
        return [await self.receive() for _ in range(count)]

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply(self, request: Packet, payload: bytes, type_: int | None = None) -> None:
        await self.send(reply_bytes(request, payload, type_))

    async def error(self, request: Packet, name: str) -> None:
        await self.send(error_bytes(request, name))

    async def event(self, path: str, token: str) -> None:
        await self.send(event_bytes(path, token))

    async def answer(self, payload: bytes = b"OK\0", type_: int | None = None) -> Packet:
        """Receive one request and reply to it with ``payload``."""
        request = await self.receive()
        await self.reply(request, payload, type_)
        return request

    async def serve(self, handler: Handler) -> None:
        """Answer every request with ``handler(request)`` until EOF.

        The handler returns the raw bytes to send (replies and events), or
        None to close the connection.
        """
        while True:
            try:
                request = await self.receive()
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            data = handler(request)
            if data is None:
                await self.stream.aclose()
                return
            await self.send(data)

    async def idle(self, seconds: float = 0.05) -> bool:
        """True if the client sends nothing more within ``seconds``."""
        if self.backlog:
            return False
        with trio.move_on_after(seconds):
            data = await self.stream.receive_some(65536)
            self.backlog.extend(self.decoder.feed(bytes(data)))
            return False
        return True

    async def close(self) -> None:
        await self.stream.aclose()
