"""Incremental framing: bytes in any chunking, whole packets out.

Like h11's receive buffer, the buffer is consumed by offset and compacted
only once per ``feed``, so a stream of small packets costs O(n) in total.
A partial packet stays buffered (``pending``) so that live update can carry
it across an exec.
"""

from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE, PAYLOAD_MAX, Packet


class Decoder:
    """Split a byte stream into packets, refusing payloads over 4096 bytes."""

    __slots__ = ("_buffer", "_error")

    def __init__(self, pending: bytes = b"") -> None:
        self._buffer = bytearray(pending)
        self._error: ProtocolError | None = None

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete packet not yet returned."""
        return bytes(self._buffer)

    @property
    def error(self) -> ProtocolError | None:
        """The bad header after the packets returned, which the next ``feed`` raises."""
        return self._error

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data`` and return every packet it completes, in order.

        Raises ProtocolError on a header announcing more than PAYLOAD_MAX
        bytes; the caller closes the connection as C does (spec 1.1). Good
        packets before such a header are returned first, since C would have
        handled them, and the error is raised by the next call (even with no
        data), so a caller should ``feed(b"")`` after handling a batch.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        packets: list[Packet] = []
        offset = 0
        end = len(buffer)
        while end - offset >= HEADER_SIZE:
            type_, req_id, tx_id, length = HEADER.unpack_from(buffer, offset)
            if length > PAYLOAD_MAX:
                self._error = ProtocolError(f"payload length {length} exceeds {PAYLOAD_MAX}")
                if not packets:
                    raise self._error
                break
            start = offset + HEADER_SIZE
            if end - start < length:
                break
            packets.append(Packet(type_, req_id, tx_id, bytes(buffer[start : start + length])))
            offset = start + length
        if offset:
            del buffer[:offset]
        return packets
