"""The server side of one xenstore ring, as a pure object over a page view.

No I/O, no trio, no event channels: the object moves bytes between the
shared page and its caller and says when the peer should be notified. The
trio shell drives it on every event-channel kick (and on re-polls, since
events are only hints, spec 7.3)::

    if ring.reconnect_requested():           # spec 7.4, step 1 seen
        decoder = Decoder()                  # drop partial packets ...
        outgoing.clear()                     # ... both ways,
        engine.reset_connection(conn)        # in-flight requests, watches, transactions
        ring.complete_reconnect()            # indices/buffers reset, connection = CONNECTED
    while data := ring.read_requests():      # BadRingError -> connection ignored
        packets += decoder.feed(data)        # ProtocolError -> ring.ignore(RingError.PROTO)
    ... engine ...
    sent = ring.write_responses(outgoing)    # partial writes are normal
    del outgoing[:sent]                      # the shell keeps the unsent remainder
    if ring.take_notify():
        evtchn.notify(port)

Memory ordering (spec 7.2)
--------------------------
The C daemon reads both indices, issues ``xen_mb()``, copies, issues
``xen_mb()`` again, then publishes the new index. The orderings it needs are:

* read side: load ``req_prod`` -> load ``req[]`` bytes -> store ``req_cons``
  (the guest's data must be seen as of the index we read, and we must finish
  reading before the guest may reuse the space);
* write side: store ``rsp[]`` bytes -> store ``rsp_prod`` (and the load of
  ``rsp_cons`` before the stores into the space it frees).

Python cannot emit a fence. What we rely on instead:

1. *Single, untorn index reads.* Each index is read exactly once per
   operation into a local (``prod = iface.req_prod``); cffi performs that as
   one aligned 4-byte load, which is single-copy atomic on x86 and Arm. All
   checks and arithmetic use the local, so a guest changing the field during
   the operation (a double fetch, the XSA-155 pattern) cannot make the bounds
   we checked differ from the bounds we copy.
2. *No compiler reordering.* Every index access and every copy is a separate
   call into cffi from the bytecode loop, executed in program order; no C
   compiler sees two of them at once, so none can be merged or reordered
   (this is all ``xen_rmb()``/``xen_wmb()`` are on x86: compiler barriers).
3. *x86 (TSO)* keeps load->load, load->store and store->store order in
   hardware; the only reordering it allows, a later load passing an earlier
   store, is harmless here (it can only make us see a stale, smaller ring,
   and the peer's notification makes us look again). So on x86-64 the
   sequence above is correct without any fence.
4. *Arm (and other weakly ordered CPUs)* may reorder all of these in
   hardware, and nothing in CPython guarantees a ``dmb`` between them. There
   the caller must pass a real ``fence`` (a full barrier such as
   ``__atomic_thread_fence(__ATOMIC_SEQ_CST)`` from a compiled cffi helper,
   which the real Xen backend can provide next to its other bindings). The
   ring calls ``fence()`` exactly where C calls ``xen_mb()``: after reading
   the indices and between the copy and the index update. The default is a
   no-op, correct on x86 and for the simulated backend's shared memory.

The guest side (``guest.py``) follows the same rules in the mirror image.
"""

from __future__ import annotations

from collections.abc import Callable

from pyxenstored.ring.indices import BadRingError, advance, checked_used, copy_in, copy_out
from pyxenstored.ring.layout import RING_SIZE, Connection, Feature, RingError, RingPage


def no_fence() -> None:
    """The default memory barrier: nothing (see the module docstring)."""


_INVALID_FILL = b"\xff" * RING_SIZE
"""What oxenstored fills both buffers with on reset: XS_INVALID (0xffff) headers."""

DEFAULT_FEATURES = Feature.RECONNECTION | Feature.ERROR
"""What the ring itself can honour. The shell adds WATCHDEPTH/DOMID_ANY if
the engine supports them."""


class ServerRing:
    """The server's end of one ring page (spec 7).

    Indices live only in the page (as in C), so a ring can be re-attached to
    an existing page after a restart or live update without losing data in
    flight: constructing a ``ServerRing`` reads and writes nothing.

    Once the ring is *ignored* (a bad index, or the caller's ``ignore()``
    for a protocol violation, spec 7.5) every transfer raises
    ``BadRingError`` without touching the page, and no reconnect is
    honoured; only a new ``ServerRing`` (the domain's next life) clears it.
    """

    __slots__ = ("page", "_features", "_fence", "_notify", "_ignored", "_deferred",
                 "_req_cons", "_rsp_prod")

    def __init__(
        self,
        page: RingPage,
        features: Feature = DEFAULT_FEATURES,
        *,
        fence: Callable[[], None] = no_fence,
        deferred: bool = False,
    ) -> None:
        self.page = page
        self._features = Feature(features)
        self._fence = fence
        self._notify = False
        self._ignored: RingError | None = None
        #: With ``deferred``, transfers move private copies of the two
        #: indices the server owns, and only ``publish()`` shows them to the
        #: guest: a daemon that journals first can then never have shown a
        #: guest more than its journal holds (requests taken, replies given).
        self._deferred = deferred
        self._req_cons: int | None = None
        self._rsp_prod: int | None = None

    # -- state -------------------------------------------------------------

    @property
    def features(self) -> Feature:
        """The features this server advertises (its own record, not the page's)."""
        return self._features

    @property
    def ignored(self) -> RingError | None:
        """Why the connection is ignored, or None while it is usable."""
        return self._ignored

    @property
    def evtchn_port(self) -> int:
        """The guest's port pre-filled by the builder (0 if none, spec 7.1)."""
        return int(self.page.iface.evtchn_port)

    @property
    def notify_pending(self) -> bool:
        """Whether the ring changed since the last ``take_notify()``."""
        return self._notify

    def take_notify(self) -> bool:
        """Return whether to signal the event channel, and clear the flag.

        Set by every transfer that moved at least one byte (reads too, so the
        guest learns there is space: C notifies after every chunk, spec 7.3),
        by ``connect()`` and by ``complete_reconnect()``. One notification
        after a batch is enough: events are hints and the guest re-reads the
        indices, which are all published before the flag is returned.
        """
        notify, self._notify = self._notify, False
        return notify

    # -- features, connection, error ----------------------------------------

    def advertise(self, features: Feature) -> None:
        """Add feature bits and publish them; bits are never cleared (spec 7.1)."""
        self._features |= features
        self.publish_features()

    def publish_features(self) -> None:
        """Write ``server_features``. Must precede any queue access (spec 7.4)."""
        self.page.iface.server_features = int(self._features)

    def connect(self) -> None:
        """Introduce the ring: publish features, set CONNECTED, request a notify.

        What C does on INTRODUCE and on startup auto-introduction (spec 7.4,
        7.6); it completes a dom0less page's pre-set RECONNECT. Indices and
        data are left alone, so it is also right when re-attaching after a
        restart.
        """
        self.publish_features()
        self._fence()
        self.page.iface.connection = Connection.CONNECTED
        self._notify = True

    def set_error(self, error: RingError) -> bool:
        """Write the ``error`` field if ERROR was advertised; return whether written."""
        if not self._features & Feature.ERROR:
            return False
        self.page.iface.error = int(error)
        return True

    def ignore(self, error: RingError) -> None:
        """Stop serving this ring (spec 7.5): record ``error`` and publish it.

        The caller frees the connection's watches, transactions and buffers
        but keeps the domain until it really dies (XSA-325). Idempotent; the
        first reason is kept.
        """
        if self._ignored is None:
            self._ignored = error
            self.set_error(error)

    # -- reconnect handshake (spec 7.4) -------------------------------------

    def reconnect_requested(self) -> bool:
        """Whether the guest has set ``connection`` = RECONNECT.

        Only honoured while RECONNECTION is advertised and the ring is not
        ignored. When True, the caller drops partial packets in both
        directions (its Decoder and unsent output), discards the
        connection's in-flight requests, watches and transactions, then
        calls ``complete_reconnect()``.
        """
        if self._ignored is not None or not self._features & Feature.RECONNECTION:
            return False
        return bool(self.page.iface.connection == Connection.RECONNECT)

    def complete_reconnect(self) -> None:
        """Empty both queues and set CONNECTED; request a notify.

        As oxenstored does: all four indices to 0, both buffers filled with
        0xff (XS_INVALID headers, should anyone read stale bytes), a barrier,
        then ``connection`` = CONNECTED, so the guest sees the reset only
        after it is complete. The result is a reset on a packet boundary.
        """
        iface = self.page.iface
        self.publish_features()
        self._req_cons = self._rsp_prod = None
        iface.req_cons = 0
        iface.req_prod = 0
        iface.rsp_cons = 0
        iface.rsp_prod = 0
        self.page.req[:] = _INVALID_FILL
        self.page.rsp[:] = _INVALID_FILL
        self._fence()
        iface.connection = Connection.CONNECTED
        self._notify = True

    # -- transfers (spec 7.2) -------------------------------------------------

    def _fail(self, exc: BadRingError) -> BadRingError:
        self.ignore(exc.error)
        return exc

    def read_requests(self, max_bytes: int = RING_SIZE) -> bytes:
        """Consume and return up to ``max_bytes`` bytes the guest produced.

        Reads ``req_prod`` and ``req_cons`` once each, validates them, copies
        the bytes (in up to two pieces around the wrap), then advances
        ``req_cons``. Returns ``b""`` when the ring is empty. A bad index
        pair ignores the ring with RINGIDX and raises ``BadRingError``;
        so does any call once the ring is ignored.
        """
        if self._ignored is not None:
            raise BadRingError("ring is ignored", self._ignored)
        iface = self.page.iface
        cons = iface.req_cons if self._req_cons is None else self._req_cons
        prod = iface.req_prod
        self._fence()
        try:
            avail = checked_used(prod, cons)
        except BadRingError as exc:
            raise self._fail(exc) from None
        n = min(avail, max_bytes)
        if n <= 0:
            return b""
        data = copy_out(self.page.req, cons, n)
        self._fence()
        if self._deferred:
            self._req_cons = advance(cons, n)
        else:
            iface.req_cons = advance(cons, n)
        self._notify = True
        return data

    def write_responses(self, data: bytes | bytearray | memoryview) -> int:
        """Write as much of ``data`` as fits into ``rsp``; return the count.

        Reads ``rsp_cons`` and ``rsp_prod`` once each, validates them, copies
        into the free space (up to two pieces around the wrap), then advances
        ``rsp_prod``. Partial writes are normal: the caller keeps
        ``data[returned:]`` and retries on the next kick. Bad indices behave
        as in ``read_requests``.
        """
        if self._ignored is not None:
            raise BadRingError("ring is ignored", self._ignored)
        iface = self.page.iface
        cons = iface.rsp_cons
        prod = iface.rsp_prod if self._rsp_prod is None else self._rsp_prod
        self._fence()
        try:
            space = RING_SIZE - checked_used(prod, cons)
        except BadRingError as exc:
            raise self._fail(exc) from None
        # Released before returning, so the caller may resize a bytearray at once.
        with memoryview(data) as raw, raw.cast("B") as view:
            n = min(space, view.nbytes)
            if n <= 0:
                return 0
            copy_in(self.page.rsp, prod, view[:n])
            self._fence()
            if self._deferred:
                self._rsp_prod = advance(prod, n)
            else:
                iface.rsp_prod = advance(prod, n)
            self._notify = True
            return n

    # -- deferred publication -------------------------------------------------

    def positions(self) -> tuple[int, int]:
        """``req_cons`` and ``rsp_prod`` as they will be once published."""
        iface = self.page.iface
        return (
            iface.req_cons if self._req_cons is None else self._req_cons,
            iface.rsp_prod if self._rsp_prod is None else self._rsp_prod,
        )

    def publish(self) -> None:
        """Show the guest the deferred index moves (the data is already there)."""
        iface = self.page.iface
        if self._req_cons is not None:
            iface.req_cons = self._req_cons
            self._req_cons = None
        if self._rsp_prod is not None:
            self._fence()
            iface.rsp_prod = self._rsp_prod
            self._rsp_prod = None

    def resume(self, req_cons: int, rsp_prod: int) -> None:
        """After a restart: publish the positions the journal recorded when the
        page lags behind them (the daemon died between its journal write and
        ``publish``); a page already there, or a reset one, is left alone."""
        iface = self.page.iface
        if 0 < (req_cons - iface.req_cons) % 2**32 <= RING_SIZE:
            iface.req_cons = req_cons
            self._notify = True
        if 0 < (rsp_prod - iface.rsp_prod) % 2**32 <= RING_SIZE:
            self._fence()
            iface.rsp_prod = rsp_prod
            self._notify = True
