"""Xenstore ring transport: page layout, index arithmetic, reconnect (spec 7).

Pure code: no I/O, no trio. The event-channel and mapping backends (real
Xen, simulated) live beside these modules and drive them.
"""

from pyxenstored.ring.guest import GuestRing
from pyxenstored.ring.indices import BadRingError
from pyxenstored.ring.layout import (
    INTERFACE_SIZE,
    PAGE_SIZE,
    RING_SIZE,
    Connection,
    Feature,
    RingError,
    RingPage,
)
from pyxenstored.ring.ring import DEFAULT_FEATURES, ServerRing

__all__ = [
    "DEFAULT_FEATURES",
    "INTERFACE_SIZE",
    "PAGE_SIZE",
    "RING_SIZE",
    "Connection",
    "Feature",
    "GuestRing",
    "RingError",
    "BadRingError",
    "RingPage",
    "ServerRing",
]
