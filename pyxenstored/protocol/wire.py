"""The 16-byte header and packet encoding (spec 1.1).

Byte order is the host's: the header carries no marker and both ends of a
xenstore connection always share a CPU.
"""

import struct
from typing import Final

import attrs

from pyxenstored.protocol.ops import Op

HEADER: Final = struct.Struct("=IIII")
HEADER_SIZE: Final = HEADER.size
PAYLOAD_MAX: Final = 4096


@attrs.frozen(slots=True)
class Packet:
    """One message: a header's fields plus its payload."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes

    def encode(self) -> bytes:
        return HEADER.pack(self.type, self.req_id, self.tx_id, len(self.payload)) + self.payload


def encode(type_: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """Serialise one message without building a Packet (the reply hot path)."""
    return HEADER.pack(type_, req_id, tx_id, len(payload)) + payload


def error_payload(name: str) -> bytes:
    return name.encode("ascii") + b"\0"


def watch_event(path: str, token: str) -> bytes:
    """A complete WATCH_EVENT message (req_id and tx_id are 0)."""
    return encode(Op.WATCH_EVENT, 0, 0, f"{path}\0{token}\0".encode("latin-1"))


OK_PAYLOAD: Final = b"OK\0"
