"""The guest side of a xenstore ring: the mirror image of ``ServerRing``.

Used by the tests and by the simulated guest. A guest produces into ``req``
and consumes from ``rsp`` with the same index rules as the server (spec 7.2):
read both indices once, validate, copy (wrapping at 1024), fence, then
publish its own index. See ``ring.py`` for why this is ordered correctly
without explicit barriers on x86, and what ``fence`` is for elsewhere.

The guest never writes ``server_features``, ``error`` or ``evtchn_port``, and
writes ``connection`` only to start a reconnect (spec 7.4).
"""

from __future__ import annotations

from collections.abc import Callable

from pyxenstored.ring.indices import BadRingError, advance, checked_used, copy_in, copy_out
from pyxenstored.ring.layout import RING_SIZE, Connection, Feature, RingPage
from pyxenstored.ring.ring import no_fence


class GuestRing:
    """A guest's (xenbus client's) end of one ring page.

    Stateless apart from the page: every operation re-reads the indices, so a
    guest may attach to a page at any index values (they need not start at 0).
    Bad indices raise ``BadRingError``, as a careful guest would treat a
    misbehaving server.
    """

    __slots__ = ("page", "_fence")

    def __init__(self, page: RingPage, *, fence: Callable[[], None] = no_fence) -> None:
        self.page = page
        self._fence = fence

    @property
    def server_features(self) -> Feature:
        """The bits the server advertised (unknown bits are kept)."""
        return Feature(int(self.page.iface.server_features))

    @property
    def error(self) -> int:
        """The server's ``error`` field; may hold values beyond ``RingError``."""
        return int(self.page.iface.error)

    @property
    def connected(self) -> bool:
        """Whether ``connection`` is CONNECTED (a reconnect has completed)."""
        return bool(self.page.iface.connection == Connection.CONNECTED)

    def start_reconnect(self) -> None:
        """Set ``connection`` = RECONNECT (spec 7.4 step 1); the caller notifies.

        From here until ``connected`` is True again the guest must ignore
        everything but ``connection``. Raises RuntimeError if the server did
        not advertise RECONNECTION, as a guest must then not use it.
        """
        if not self.server_features & Feature.RECONNECTION:
            raise RuntimeError("server does not advertise RECONNECTION")
        self.page.iface.connection = Connection.RECONNECT

    def write_requests(self, data: bytes | bytearray | memoryview) -> int:
        """Write as much of ``data`` as fits into ``req``; return the count."""
        iface = self.page.iface
        cons = iface.req_cons
        prod = iface.req_prod
        self._fence()
        space = RING_SIZE - checked_used(prod, cons)
        # Released before returning, so the caller may resize a bytearray at once.
        with memoryview(data) as raw, raw.cast("B") as view:
            n = min(space, view.nbytes)
            if n <= 0:
                return 0
            copy_in(self.page.req, prod, view[:n])
            self._fence()
            iface.req_prod = advance(prod, n)
            return n

    def read_responses(self, max_bytes: int = RING_SIZE) -> bytes:
        """Consume and return up to ``max_bytes`` bytes from ``rsp``."""
        iface = self.page.iface
        cons = iface.rsp_cons
        prod = iface.rsp_prod
        self._fence()
        n = min(checked_used(prod, cons), max_bytes)
        if n <= 0:
            return b""
        data = copy_out(self.page.rsp, cons, n)
        self._fence()
        iface.rsp_cons = advance(cons, n)
        return data


__all__ = ["GuestRing", "BadRingError"]
