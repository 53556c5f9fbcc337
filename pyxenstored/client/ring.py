"""The guest side of a xenstore ring as a ``trio.abc.Stream`` (spec 7).

A guest kernel's xenbus driver talks to xenstored through one shared page
(``req`` for requests, ``rsp`` for replies and watch events) and an event
channel. ``RingStream`` plays that part for the async client, so the whole
``Client`` API runs as a simulated guest::

    async with open_ring_client(page, doorbell) as client:
        await client.write("name", "guest5")      # /local/domain/<N>/name

It is generic over how the page and the event channel are provided:

* ``page`` is any writable buffer of at least ``INTERFACE_SIZE`` bytes (a
  whole 4096-byte page, normally): an ``mmap`` of the stand-in hypervisor's
  ``dom<N>/ring`` file, a grant mapping, or a ``bytearray`` in tests. The
  index logic is ``pyxenstored.ring.GuestRing``'s.
* ``doorbell`` is a ``Doorbell``: ``notify()`` kicks the server,
  ``await wait()`` returns when the server kicked us.

Events are only hints (spec 7.3): after every wake-up the indices are read
again, and nothing is assumed from the kick itself. A ``Doorbell`` must latch
a kick that arrives while nobody waits (Xen's pending bit), so that the next
``wait()`` returns at once; a spurious return is always allowed. As a guard
against a lost kick (or a server that reports an error without one), waits
also time out every ``poll_interval`` seconds and re-check the ring.

There is no EOF on a ring: ``receive_some`` never returns ``b""``. The
stream breaks (``trio.BrokenResourceError``) when the server sets the page's
``error`` field (spec 7.1, 7.5) or the indices stop making sense (spec 7.2);
the client then fails every request with ``ConnectionClosed`` naming why.

Ownership: the stream borrows the page and the doorbell. ``aclose()``
releases its view of the page (so an ``mmap`` can be closed afterwards) but
closes neither the page nor the doorbell, and says nothing to the server: a
ring has no close. Cancelling ``send_all`` part-way leaves a partial packet
in the ring, as with any byte stream; the client never does that.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Protocol

import trio

from pyxenstored.client.client import Client, open_stream_client
from pyxenstored.ring.guest import GuestRing
from pyxenstored.ring.indices import BadRingError, checked_used
from pyxenstored.ring.layout import RING_SIZE, RingError, RingPage
from pyxenstored.ring.ring import no_fence

#: Seconds between re-checks of the ring while waiting, in case a kick is lost.
DEFAULT_POLL_INTERVAL = 1.0


class Doorbell(Protocol):
    """The guest's end of the ring's event channel."""

    def notify(self) -> None:
        """Kick the server; must not block, and never fails (as in Xen)."""

    async def wait(self) -> None:
        """Return once the server has kicked us (at once if a kick is pending).

        Consumes the pending kick(s). May return spuriously. Only one task
        waits at a time: ``RingStream`` shares one waiter between its sender
        and its receiver.
        """


class _OneTaskAtATime:
    """trio's rule for streams: one sender and one receiver at a time."""

    __slots__ = ("_doing", "_busy")

    def __init__(self, doing: str) -> None:
        self._doing = doing
        self._busy = False

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError(f"another task is already {self._doing}")
        self._busy = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._busy = False


def describe_ring_error(value: int) -> str:
    """``error`` field value as text: ``RINGIDX (2)``, or ``unknown (7)``."""
    try:
        return f"{RingError(value).name} ({value})"
    except ValueError:
        return f"unknown ({value})"


class RingStream(trio.abc.Stream):
    """The guest (xenbus client) end of a xenstore ring page, as a byte stream.

    ``send_all`` produces into ``req`` (in chunks as space frees up, kicking
    the server after each), ``receive_some`` consumes from ``rsp`` (kicking
    the server afterwards, so it knows there is space). ``fence`` is the
    memory barrier ``GuestRing`` issues (see ``pyxenstored.ring.ring``).
    ``poll_interval`` is how often a waiting task re-reads the ring without
    a kick; ``None`` trusts the kicks alone.
    """

    def __init__(
        self,
        page: Any,
        doorbell: Doorbell,
        *,
        poll_interval: float | None = DEFAULT_POLL_INTERVAL,
        fence: Callable[[], None] = no_fence,
    ) -> None:
        if poll_interval is not None and poll_interval <= 0:
            raise ValueError("poll_interval must be positive (or None)")
        self._page = RingPage(page)
        self._ring = GuestRing(self._page, fence=fence)
        self._doorbell = doorbell
        self._timeout = math.inf if poll_interval is None else poll_interval
        self._send_guard = _OneTaskAtATime("sending on this ring")
        self._receive_guard = _OneTaskAtATime("receiving on this ring")
        self._closed = False
        self._broken: str | None = None
        # One task at a time waits on the doorbell; the others wait for it
        # to report a wake-up through ``_wake`` (see ``_wait``).
        self._wake = trio.Event()
        self._doorbell_waiter: trio.CancelScope | None = None

    # -- state ---------------------------------------------------------------

    @property
    def ring(self) -> GuestRing:
        """The index logic over the page (features, error, raw access)."""
        return self._ring

    @property
    def doorbell(self) -> Doorbell:
        return self._doorbell

    @property
    def broken(self) -> str | None:
        """Why the ring is unusable, or None while it is fine."""
        return self._broken

    def _check(self) -> None:
        """Raise if the stream is closed, or the ring is (now) broken."""
        if self._closed:
            raise trio.ClosedResourceError("the ring stream was closed")
        if self._broken is None:
            error = self._ring.error
            if error:
                self._broken = (
                    f"xenstore ring broken: the server set the error field to "
                    f"{describe_ring_error(error)}"
                )
        if self._broken is not None:
            raise trio.BrokenResourceError(self._broken)

    def _bad_indices(self, which: str, exc: BadRingError) -> trio.BrokenResourceError:
        self._broken = f"xenstore ring broken: {exc} in the {which} ring"
        return trio.BrokenResourceError(self._broken)

    # -- waiting -------------------------------------------------------------

    async def _wait(self) -> None:
        """Sleep until a kick, a poll timeout or ``aclose``; then re-check.

        The first task to wait owns the doorbell; a second one (the sender
        while the receiver waits, or the reverse) waits for the owner to
        wake up. Ring state is written before its kick, and in trio nothing
        runs between a caller's look at the ring and its call here, so no
        wake-up can fall between the two.
        """
        wake = self._wake
        if self._doorbell_waiter is not None:
            with trio.move_on_after(self._timeout):
                await wake.wait()
            return
        try:
            with trio.move_on_after(self._timeout) as scope:
                self._doorbell_waiter = scope
                await self._doorbell.wait()
        finally:
            self._doorbell_waiter = None
            self._wake = trio.Event()
            wake.set()

    # -- trio.abc.SendStream -------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` into the request ring, waiting for space."""
        with self._send_guard:
            self._check()
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            with memoryview(data) as raw, raw.cast("B") as view:
                offset, total = 0, view.nbytes
                while offset < total:
                    self._check()
                    try:
                        n = self._ring.write_requests(view[offset:])
                    except BadRingError as exc:
                        raise self._bad_indices("request", exc) from None
                    if n:
                        offset += n
                        self._doorbell.notify()
                    else:
                        await self._wait()
                        waited = True
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Return once the request ring has room for at least one byte."""
        with self._send_guard:
            self._check()
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while self._send_space() == 0:
                await self._wait()
                waited = True
                self._check()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()

    def _send_space(self) -> int:
        iface = self._page.iface
        try:
            return RING_SIZE - checked_used(iface.req_prod, iface.req_cons)
        except BadRingError as exc:
            raise self._bad_indices("request", exc) from None

    # -- trio.abc.ReceiveStream ----------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` bytes from the response ring, waiting for some.

        At most one ring's worth (1024 bytes) per call; never ``b""``.
        """
        if max_bytes is None:
            max_bytes = RING_SIZE
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        with self._receive_guard:
            self._check()
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                try:
                    data = self._ring.read_responses(max_bytes)
                except BadRingError as exc:
                    raise self._bad_indices("response", exc) from None
                if data:
                    break
                await self._wait()
                waited = True
                self._check()
            self._doorbell.notify()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    # -- trio.abc.AsyncResource ------------------------------------------------

    async def aclose(self) -> None:
        """Stop using the ring: waiting tasks get ``ClosedResourceError``.

        Releases the view of the page; the page and doorbell stay open.
        """
        if not self._closed:
            self._closed = True
            if self._doorbell_waiter is not None:
                self._doorbell_waiter.cancel()
            self._wake.set()
            self._page.release()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_ring_client(
    page: Any,
    doorbell: Doorbell,
    *,
    poll_interval: float | None = DEFAULT_POLL_INTERVAL,
    fence: Callable[[], None] = no_fence,
) -> AsyncIterator[Client]:
    """A running ``Client`` over a ring page and its doorbell, as a guest.

    The domain's paths are relative to ``/local/domain/<N>`` as for any
    guest. On exit the client and its ``RingStream`` are closed (the page's
    view is released); the page and the doorbell are the caller's to close.
    """
    stream = RingStream(page, doorbell, poll_interval=poll_interval, fence=fence)
    async with open_stream_client(stream) as client:
        yield client


__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "Doorbell",
    "RingStream",
    "describe_ring_error",
    "open_ring_client",
]
