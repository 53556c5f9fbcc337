"""The xenstore ring page: ``struct xenstore_domain_interface`` (spec 7.1).

One 4 KiB page shared by a guest and the server. The struct is declared to
cffi in ABI mode, so importing this module needs no compiler; a test compiles
the real ``<xen/io/xs_wire.h>`` and checks every offset against this layout.

The page is guest-writable memory: every field here, the server's own
indices included, can change under our feet at any time. Readers of this
module (``ring.py``, ``guest.py``) therefore read each index exactly once per
operation and validate it before use (spec 7.2, XSA-38).
"""

from __future__ import annotations

import enum
from typing import Any

import cffi

RING_SIZE = 1024
"""``XENSTORE_RING_SIZE``: bytes in each of ``req`` and ``rsp``."""
RING_MASK = RING_SIZE - 1
"""``MASK_XENSTORE_IDX``: byte k of a ring lives at ``buf[k & RING_MASK]``."""
IDX_MASK = 0xFFFF_FFFF
"""Indices are free-running ``uint32_t`` counters (``XENSTORE_RING_IDX``)."""
PAGE_SIZE = 4096
"""The ring is one page; the struct occupies its first ``INTERFACE_SIZE`` bytes."""

CDEF = f"""
typedef uint32_t XENSTORE_RING_IDX;
struct xenstore_domain_interface {{
    char req[{RING_SIZE}];
    char rsp[{RING_SIZE}];
    XENSTORE_RING_IDX req_cons, req_prod;
    XENSTORE_RING_IDX rsp_cons, rsp_prod;
    uint32_t server_features;
    uint32_t connection;
    uint32_t error;
    uint32_t evtchn_port;
}};
"""

ffi: Any = cffi.FFI()
ffi.cdef(CDEF)

INTERFACE_TYPE = "struct xenstore_domain_interface"
INTERFACE_SIZE: int = ffi.sizeof(INTERFACE_TYPE)

FIELDS = (
    "req",
    "rsp",
    "req_cons",
    "req_prod",
    "rsp_cons",
    "rsp_prod",
    "server_features",
    "connection",
    "error",
    "evtchn_port",
)
"""Every field of the struct, in declaration order."""


class Feature(enum.IntFlag):
    """``server_features`` bits (``XENSTORE_SERVER_FEATURE_*``, spec 7.1)."""

    RECONNECTION = 1
    ERROR = 2
    WATCHDEPTH = 4
    DOMID_ANY = 8


class Connection(enum.IntEnum):
    """Values of the ``connection`` field (spec 7.1, 7.4)."""

    CONNECTED = 0
    RECONNECT = 1


class RingError(enum.IntEnum):
    """Values of the ``error`` field (``XENSTORE_ERROR_*``, spec 7.1).

    Clients must tolerate other values; a server only writes these.
    """

    NONE = 0
    COMM = 1
    RINGIDX = 2
    PROTO = 3


class RingPage:
    """A writable buffer viewed as ``struct xenstore_domain_interface``.

    ``buffer`` is anything exporting a writable buffer of at least
    ``INTERFACE_SIZE`` bytes (normally a whole 4096-byte page): an ``mmap``
    of a grant mapping or of ``/proc/xen/xsd_kva``, a ``bytearray`` in tests.
    The view aliases the buffer: nothing is copied.

    Attributes:
        iface: cffi ``struct xenstore_domain_interface *`` into the buffer;
            reading or assigning a field is one aligned 32-bit access.
        req, rsp: ``ffi.buffer`` views of the two 1024-byte rings; slicing
            one copies bytes out, slice assignment copies bytes in, and both
            are bounds-checked by cffi.

    The view holds the buffer exported (an ``mmap`` cannot be closed while
    it exists); ``release()`` gives it back.
    """

    __slots__ = ("iface", "req", "rsp")

    def __init__(self, buffer: Any) -> None:
        size = memoryview(buffer).nbytes
        if size < INTERFACE_SIZE:
            raise ValueError(f"ring page buffer has {size} bytes, need {INTERFACE_SIZE}")
        # from_buffer with a struct-pointer cdecl is from_buffer + cast in one
        # step, and the returned pointer itself keeps the buffer alive.
        self.iface: Any = ffi.from_buffer(INTERFACE_TYPE + " *", buffer, require_writable=True)
        self.req: Any = ffi.buffer(self.iface.req)
        self.rsp: Any = ffi.buffer(self.iface.rsp)

    def release(self) -> None:
        """Release the underlying buffer; the view must not be used afterwards."""
        self.req = self.rsp = None
        ffi.release(self.iface)


def offsets() -> dict[str, int]:
    """Byte offset of every field, as cffi lays the struct out."""
    return {name: ffi.offsetof(INTERFACE_TYPE, name) for name in FIELDS}
