"""The framed request/reply multiplexer over one ``trio.abc.Stream``.

Why a multiplexer: xenstore lets a client keep many requests in flight
(spec 1.1, "Pipelining"), and a trio program naturally issues them from
several tasks at once. Each request gets a fresh ``req_id``; the server
echoes it, and a single reader task hands every reply to whoever is waiting
for that id. Servers answer in request order, but during a live update C
may answer TRANSACTION_START late, so replies are matched by id, never by
position. WATCH_EVENT packets carry no request id and go to a callback.

Why a writer task: callers never touch the stream. ``send_request`` only
appends the encoded packet to an outgoing buffer and wakes the writer, so

* it is synchronous, and pipelining is just calling it N times;
* everything queued while the previous write was in progress goes out in
  one ``send_all`` (the batching the daemon also does, DESIGN.md);
* cancelling a caller can never leave half a packet on the wire, which
  would desynchronise the stream for every other task.

A request whose caller is cancelled stays registered until its reply
arrives, so its ``req_id`` is not reused while the server may still answer
it; the late reply is then dropped.

The outgoing buffer and the table of pending requests are bounded only by
what callers put in flight: a caller that awaits each reply (or a pipeline
of fixed depth) bounds them itself. The daemon enforces its own limit on
outstanding requests (the ``outstanding`` quota) by not reading.
"""

from collections.abc import Callable, Generator
from typing import Any

import trio

from pyxenstored.client.errors import ConnectionClosed
from pyxenstored.client.payloads import error_name
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError, XenstoreError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import PAYLOAD_MAX, Packet, encode

#: Bytes asked of the stream per read; many replies fit in one.
RECEIVE_SIZE = 65536
_REQ_ID_SPACE = 2**32

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class PendingReply:
    """The future reply to one request already handed to the connection.

    ``await pending`` (or ``await pending.wait()``) gives the reply payload,
    raising ``XenstoreError`` for an ERROR reply and ``ConnectionClosed`` if
    the connection ended first. ``wait_packet()`` gives the raw reply packet
    instead, ERROR included, for callers that compare servers byte for byte.
    Any number of tasks may wait on the same reply.
    """

    __slots__ = ("op", "req_id", "tx_id", "_event", "_packet", "_closed_reason", "_closed_cause")

    def __init__(self, op: int, req_id: int, tx_id: int) -> None:
        self.op = op
        self.req_id = req_id
        self.tx_id = tx_id
        self._event = trio.Event()
        self._packet: Packet | None = None
        self._closed_reason = ""
        self._closed_cause: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether the reply (or the connection's end) has arrived."""
        return self._event.is_set()

    async def wait_packet(self) -> Packet:
        """The reply packet as received, whatever its type."""
        await self._event.wait()
        if self._packet is None:
            # A fresh exception per waiter: sharing one instance would glue
            # every waiter's traceback onto it.
            raise ConnectionClosed(self._closed_reason) from self._closed_cause
        return self._packet

    async def wait(self) -> bytes:
        """The reply payload; an ERROR reply is raised as ``XenstoreError``."""
        packet = await self.wait_packet()
        if packet.type == Op.ERROR:
            raise XenstoreError(error_name(packet.payload))
        return packet.payload

    def __await__(self) -> Generator[Any, None, bytes]:
        return self.wait().__await__()

    def _resolve(self, packet: Packet) -> None:
        self._packet = packet
        self._event.set()

    def _fail(self, reason: str, cause: BaseException | None) -> None:
        self._closed_reason = reason
        self._closed_cause = cause
        self._event.set()


def _ignore_packet(packet: Packet) -> None:
    return None


def _ignore_close(reason: str, cause: BaseException | None) -> None:
    return None


class Connection:
    """Sends requests, matches replies by ``req_id``, forwards watch events.

    ``run()`` must be running in a nursery for anything to be sent or
    received; it returns once the connection has ended, for whatever reason.
    ``on_watch_event`` is called, synchronously in the reader task, with each
    WATCH_EVENT packet: it must not block or raise, or replies would stall.
    ``on_close`` is called once, with the reason, when the connection ends.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        on_watch_event: Callable[[Packet], None] = _ignore_packet,
        on_close: Callable[[str, BaseException | None], None] = _ignore_close,
    ) -> None:
        self._stream = stream
        self._on_watch_event = on_watch_event
        self._on_close = on_close
        self._decoder = Decoder()
        self._pending: dict[int, PendingReply] = {}
        self._next_req_id = 1
        self._outgoing = bytearray()
        self._writer_wakeup = trio.Event()
        self._cancel_scope = trio.CancelScope()
        self._close_reason: str | None = None
        self._close_cause: BaseException | None = None
        #: Replies whose req_id matched no request (a server bug, or none).
        self.unmatched_replies = 0

    @property
    def closed(self) -> bool:
        """Whether the connection has ended; every request now fails."""
        return self._close_reason is not None

    @property
    def in_flight(self) -> int:
        """Requests sent (or queued) whose reply has not arrived yet."""
        return len(self._pending)

    def send_request(self, op: int, payload: bytes = b"", tx_id: int = 0) -> PendingReply:
        """Queue one request and return its ``PendingReply`` without waiting.

        Raises ``ConnectionClosed`` if the connection has already ended and,
        like libxenstore, ``XenstoreError("E2BIG")`` for a payload over 4096
        bytes, which the server would treat as a fatal framing error.
        """
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason) from self._close_cause
        if len(payload) > PAYLOAD_MAX:
            raise XenstoreError("E2BIG")
        req_id = self._allocate_req_id()
        pending = PendingReply(op, req_id, tx_id)
        self._pending[req_id] = pending
        self._outgoing += encode(op, req_id, tx_id, payload)
        self._writer_wakeup.set()
        return pending

    async def request(self, op: int, payload: bytes = b"", tx_id: int = 0) -> bytes:
        """Send one request and wait for its reply payload."""
        return await self.send_request(op, payload, tx_id).wait()

    async def run(self) -> None:
        """Read and write until the connection ends, then close the stream."""
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop)
                    await self._read_loop()
        finally:
            self._shutdown("connection closed by the client", None)
            await trio.aclose_forcefully(self._stream)

    async def aclose(self) -> None:
        """End the connection: pending requests fail, the stream is closed.

        Requests still queued but not yet written are dropped; the server
        discards a closed connection's transactions and watches anyway.
        """
        self._shutdown("connection closed by the client", None)
        await trio.aclose_forcefully(self._stream)

    def _allocate_req_id(self) -> int:
        # Skip 0 (the id of watch events) and ids still awaiting a reply.
        req_id = self._next_req_id
        while req_id == 0 or req_id in self._pending:
            req_id = (req_id + 1) % _REQ_ID_SPACE
        self._next_req_id = (req_id + 1) % _REQ_ID_SPACE
        return req_id

    async def _read_loop(self) -> None:
        decoder = self._decoder
        try:
            while True:
                data = await self._stream.receive_some(RECEIVE_SIZE)
                if not data:
                    self._shutdown("connection closed by the server", None)
                    return
                for packet in decoder.feed(bytes(data)):
                    self._dispatch(packet)
        except ProtocolError as exc:
            self._shutdown(f"server broke the framing: {exc}", exc)
        except _STREAM_ERRORS as exc:
            self._shutdown(f"connection lost: {exc!r}", exc)

    def _dispatch(self, packet: Packet) -> None:
        if packet.type == Op.WATCH_EVENT:
            self._on_watch_event(packet)
            return
        pending = self._pending.pop(packet.req_id, None)
        if pending is None:
            self.unmatched_replies += 1
            return
        pending._resolve(packet)

    async def _write_loop(self) -> None:
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            if not self._outgoing:
                continue
            data = bytes(self._outgoing)
            self._outgoing.clear()
            try:
                await self._stream.send_all(data)
            except _STREAM_ERRORS as exc:
                self._shutdown(f"connection lost while sending: {exc!r}", exc)
                return

    def _shutdown(self, reason: str, cause: BaseException | None) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = reason
        self._close_cause = cause
        pending = list(self._pending.values())
        self._pending.clear()
        self._outgoing.clear()
        for reply in pending:
            reply._fail(reason, cause)
        self._cancel_scope.cancel()
        self._on_close(reason, cause)
