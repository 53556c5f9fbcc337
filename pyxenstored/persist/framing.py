"""Length + CRC framing of opaque records, and scanning a framed stream.

A record is an 8-byte header followed by the payload: the payload length
(u32 little-endian), then a CRC32 over those four length bytes and the
payload (u32 little-endian). Covering the length means a damaged length is
caught like damaged data, and that a zero-filled region never validates:
``crc32(bytes(4))`` is not 0, so the all-zero header of an empty payload
is wrong.

Scanning stops at the first bad record and says whether it looks like a
crash in mid-append (``torn``: harmless, the write was never acknowledged)
or like damage to data that was once complete (``corrupt``: acknowledged
writes may be lost). See ``scan`` for the rule.
"""

import struct
import zlib
from dataclasses import dataclass
from typing import Final, Literal

_LENGTH: Final = struct.Struct("<I")
_HEADER: Final = struct.Struct("<II")
HEADER_SIZE: Final = _HEADER.size
#: Longest payload accepted; a larger declared length is damage, not a record.
MAX_RECORD: Final = 1 << 30

DamageKind = Literal["torn", "corrupt"]


@dataclass(frozen=True, slots=True)
class Damage:
    """The first bad record of a stream."""

    kind: DamageKind
    #: Where the bad record starts (the valid records end here).
    offset: int


@dataclass(frozen=True, slots=True)
class Scan:
    """What a framed stream holds."""

    #: Payloads of the valid records, in order.
    records: list[bytes]
    #: Offset just after the last valid record.
    end: int
    damage: Damage | None


def _checksum(length_bytes: bytes | memoryview, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length_bytes))


def _zeros(view: memoryview) -> bool:
    return view.tobytes().count(0) == len(view)


def frame(payload: bytes) -> bytes:
    """One record: header and payload."""
    if len(payload) > MAX_RECORD:
        raise ValueError(f"record of {len(payload)} bytes exceeds MAX_RECORD ({MAX_RECORD})")
    length = _LENGTH.pack(len(payload))
    return length + _LENGTH.pack(_checksum(length, payload)) + payload


def scan(data: bytes | memoryview) -> Scan:
    """Split ``data`` into records, stopping at the first bad one.

    The bad record is ``torn`` when its declared extent reaches or passes
    the end of the data (an incomplete header, a length running past the
    end, a checksum failing on the final record), or when nothing but zero
    bytes follows its extent: appends only ever add to the end, and a crash
    can leave the end of a file as zeros (the size was stored before the
    data blocks). Otherwise valid-looking data follows the bad record, so it
    was damaged after it was written: ``corrupt``.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    records: list[bytes] = []
    offset = 0
    while offset < size:
        stop = offset + HEADER_SIZE
        if stop <= size:
            length, crc = _HEADER.unpack_from(view, offset)
            stop += length
            if length <= MAX_RECORD and stop <= size:
                payload = view[offset + HEADER_SIZE : stop]
                if _checksum(view[offset : offset + 4], payload) == crc:
                    records.append(bytes(payload))
                    offset = stop
                    continue
        torn = stop >= size or _zeros(view[stop:])
        return Scan(records, offset, Damage("torn" if torn else "corrupt", offset))
    return Scan(records, offset, None)
