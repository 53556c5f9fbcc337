"""Shared helpers for tests/ring: fresh pages, index setup, canaries."""

from __future__ import annotations

from pyxenstored.ring.guest import GuestRing
from pyxenstored.ring.layout import INTERFACE_SIZE, PAGE_SIZE, Feature, RingPage
from pyxenstored.ring.ring import DEFAULT_FEATURES, ServerRing

U32 = 2**32
CANARY = 0xA5


def new_page() -> tuple[bytearray, RingPage]:
    """A 4096-byte page whose bytes past the struct are a canary pattern."""
    buffer = bytearray(PAGE_SIZE)
    buffer[INTERFACE_SIZE:] = bytes([CANARY]) * (PAGE_SIZE - INTERFACE_SIZE)
    return buffer, RingPage(buffer)


def canaries_intact(buffer: bytearray) -> bool:
    return bool(buffer[INTERFACE_SIZE:] == bytes([CANARY]) * (PAGE_SIZE - INTERFACE_SIZE))


def pair(
    req_start: int = 0, rsp_start: int = 0, features: Feature = DEFAULT_FEATURES
) -> tuple[bytearray, RingPage, ServerRing, GuestRing]:
    """A connected server/guest pair with both rings empty at the given indices."""
    buffer, page = new_page()
    iface = page.iface
    iface.req_cons = iface.req_prod = req_start % U32
    iface.rsp_cons = iface.rsp_prod = rsp_start % U32
    server = ServerRing(page, features)
    server.connect()
    server.take_notify()
    return buffer, page, server, GuestRing(page)


def indices(page: RingPage) -> tuple[int, int, int, int]:
    i = page.iface
    return (i.req_cons, i.req_prod, i.rsp_cons, i.rsp_prod)
