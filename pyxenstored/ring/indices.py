"""Ring index arithmetic on plain ints (spec 7.2), and copying across the wrap.

Indices are free-running u32 byte counters: the producer index counts bytes
ever written, the consumer index bytes ever read, both wrapping at 2**32.
Byte k lives at ``buf[k & 1023]``. A ring is sane only while
``(prod - cons) mod 2**32 <= 1024``; anything else (prod behind cons, more
than a ring's worth ahead, garbage) is a bad ring (XSA-38).
"""

from __future__ import annotations

from typing import Any

from pyxenstored.ring.layout import IDX_MASK, RING_MASK, RING_SIZE, RingError


class BadRingError(Exception):
    """The ring cannot be used: bad indices (spec 7.2, XSA-38) or ignored (7.5).

    The only exception the ring objects raise for bad shared state. ``error``
    is the ``RingError`` the connection is ignored with: RINGIDX for indices,
    or the reason the caller passed to ``ServerRing.ignore()``.
    """

    def __init__(self, message: str, error: RingError = RingError.RINGIDX) -> None:
        super().__init__(message)
        self.error = error


def used(prod: int, cons: int) -> int:
    """Bytes between cons and prod, modulo 2**32 (may exceed RING_SIZE)."""
    return (prod - cons) & IDX_MASK


def checked_used(prod: int, cons: int) -> int:
    """Bytes in the ring; BadRingError if the pair is not a sane ring."""
    n = (prod - cons) & IDX_MASK
    if n > RING_SIZE:
        raise BadRingError(f"bad ring indices prod={prod:#x} cons={cons:#x}")
    return n


def advance(index: int, n: int) -> int:
    """``index + n`` as a u32."""
    return (index + n) & IDX_MASK


def spans(start: int, n: int) -> tuple[int, int, int]:
    """Split n bytes from index ``start`` at the wrap of the 1024-byte buffer.

    Returns ``(offset, first, second)``: ``first`` bytes at
    ``buf[offset:offset + first]`` then ``second`` bytes at ``buf[0:second]``.
    Requires ``0 <= n <= RING_SIZE``.
    """
    offset = start & RING_MASK
    first = min(n, RING_SIZE - offset)
    return offset, first, n - first


def copy_out(buf: Any, index: int, n: int) -> bytes:
    """``n`` bytes of a ring buffer from free-running ``index``, across the wrap."""
    offset, first, second = spans(index, n)
    data: bytes = buf[offset : offset + first]
    if second:
        data += buf[0:second]
    return data


def copy_in(buf: Any, index: int, data: memoryview) -> None:
    """Place ``data`` (at most a ring's worth) at free-running ``index``, across the wrap."""
    offset, first, second = spans(index, len(data))
    buf[offset : offset + first] = data[:first]
    if second:
        buf[0:second] = data[first:]
