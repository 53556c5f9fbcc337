"""An async simulated guest on the stand-in hypervisor (docs/testing.md).

``guest.py`` is the minimal synchronous guest; this is the full one: the
``pyxenstored.client`` API over ``RingStream``, with the ring page and the
event channel provided the stand-in's way:

* the page is ``$FAKEXEN_DIR/dom<N>/ring``, mmapped MAP_SHARED (grant ref 1);
* the guest's event channel is an unbound port: an AF_UNIX datagram socket
  bound at the lowest free ``evtchn/<N>-<p>.sock``, exactly as ``guest.py``
  (and the library) allocate it; a kick is one datagram to whatever
  ``evtchn/<N>-<p>.peer`` names once the daemon has bound to the port.

::

    guest = RingGuest(fx.root, 5)
    introduce(daemon.socket_path, 5, guest.port)
    async with guest.client() as client:
        await client.write("name", "guest5")
    guest.close()

``RingGuest`` can also be told to misbehave (garbage indices, raw bytes
that break the framing, lost kicks, a reconnect request) so that daemons can
be tested against a hostile guest. That lives here, in test code, not in
``pyxenstored.client.ring``.
"""

from __future__ import annotations

import mmap
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio
from fakexen_support import allocate_unbound_port

from pyxenstored.client import Client
from pyxenstored.client.ring import DEFAULT_POLL_INTERVAL, open_ring_client
from pyxenstored.ring import RING_SIZE, GuestRing, RingPage

PAGE_SIZE = 4096
_IDX_MASK = 0xFFFF_FFFF


class EvtchnDoorbell:
    """A ``Doorbell`` over the stand-in's datagram-socket event channels.

    ``wait()`` drains every queued datagram, as ``xenevtchn_pending`` does:
    Xen keeps one pending bit per port, not a count. ``muted`` (a
    misbehaviour) drops every kick this side would send.
    """

    def __init__(self, fakexen_dir: Path | str, domid: int) -> None:
        self.evtchn_dir = Path(fakexen_dir) / "evtchn"
        self.domid = domid
        self.sock, self.port = allocate_unbound_port(self.evtchn_dir, domid)
        self.sock_path = self.evtchn_dir / f"{domid}-{self.port}.sock"
        self.peer_path = self.evtchn_dir / f"{domid}-{self.port}.peer"
        self.muted = False
        #: Kicks sent / lost because nobody has bound to the port yet.
        self.kicks_sent = 0
        self.kicks_unbound = 0
        #: Wake-ups that found at least one datagram.
        self.kicks_received = 0

    def notify(self) -> None:
        if self.muted:
            return
        try:
            self.sock.sendto(b"kick", str(self.peer_path))
        except (FileNotFoundError, ConnectionRefusedError):
            self.kicks_unbound += 1  # no daemon bound yet: Xen drops it too
            return
        except BlockingIOError:
            pass  # the peer's queue is full, so it has a kick pending anyway
        self.kicks_sent += 1

    async def wait(self) -> None:
        if not self._drain():
            await trio.lowlevel.wait_readable(self.sock)
            self._drain()

    def _drain(self) -> bool:
        got = False
        while True:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                break
            got = True
        if got:
            self.kicks_received += 1
        return got

    def close(self) -> None:
        """Close the socket and free the port (a task may still be waiting)."""
        try:
            trio.lowlevel.notify_closing(self.sock)
        except RuntimeError:
            pass  # not inside trio: nobody can be waiting
        self.sock.close()
        self.sock_path.unlink(missing_ok=True)


def map_ring(fakexen_dir: Path | str, domid: int) -> mmap.mmap:
    """mmap ``dom<N>/ring`` shared, creating it as a zeroed page if missing."""
    path = Path(fakexen_dir) / f"dom{domid}" / "ring"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(bytes(PAGE_SIZE))
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), PAGE_SIZE, mmap.MAP_SHARED)


class RingGuest:
    """Domain ``domid`` as an async simulated guest on the stand-in."""

    def __init__(self, fakexen_dir: Path | str, domid: int) -> None:
        self.domid = domid
        self.page = map_ring(fakexen_dir, domid)
        self.doorbell = EvtchnDoorbell(fakexen_dir, domid)
        # Our own view for inspection and misbehaviour; the client's stream
        # holds (and releases) its own.
        self._view = RingPage(self.page)
        self.ring = GuestRing(self._view)

    @property
    def port(self) -> int:
        """The unbound port to pass to ``INTRODUCE``."""
        return self.doorbell.port

    def client(
        self, *, poll_interval: float | None = DEFAULT_POLL_INTERVAL
    ) -> AbstractAsyncContextManager[Client]:
        """``async with guest.client() as client``: the Client over the ring."""
        return open_ring_client(self.page, self.doorbell, poll_interval=poll_interval)

    def indices(self) -> tuple[int, int, int, int]:
        """``(req_cons, req_prod, rsp_cons, rsp_prod)`` as the page has them now."""
        iface = self._view.iface
        return (
            int(iface.req_cons),
            int(iface.req_prod),
            int(iface.rsp_cons),
            int(iface.rsp_prod),
        )

    def close(self) -> None:
        """Free the port and unmap the page (after every client has exited)."""
        self.doorbell.close()
        self._view.release()
        self.page.close()

    # -- misbehaviour ----------------------------------------------------------

    def corrupt_request_index(self, ahead: int = RING_SIZE + 1) -> None:
        """Claim ``ahead`` bytes in ``req`` (more than a ring's worth by default)
        and kick: a bad index pair (spec 7.2, XSA-38)."""
        iface = self._view.iface
        iface.req_prod = (int(iface.req_cons) + ahead) & _IDX_MASK
        self.doorbell.notify()

    def corrupt_response_index(self, behind: int = 1) -> None:
        """Move ``rsp_cons`` past ``rsp_prod``: the server sees a bad pair."""
        iface = self._view.iface
        iface.rsp_cons = (int(iface.rsp_prod) + behind) & _IDX_MASK
        self.doorbell.notify()

    def send_raw(self, data: bytes) -> int:
        """Write raw bytes (say, a header announcing too long a payload)
        straight into ``req`` and kick; returns how many fitted."""
        n = self.ring.write_requests(data)
        self.doorbell.notify()
        return n

    def start_reconnect(self) -> None:
        """Ask for a reconnect (spec 7.4) and kick; RuntimeError without the feature."""
        self.ring.start_reconnect()
        self.doorbell.notify()
