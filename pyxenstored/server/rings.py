"""Guests' shared rings: the event channel loop and each domain's ring (spec 7).

One ``Rings`` owns the daemon's event-channel handle, the grant mappings
and the table from local port to ring connection. All ring work is
synchronous memory copying, so it runs inside the single event loop task
with no locking: a kick on a guest's port services that ring (reconnect,
requests in, replies out); a kick on the VIRQ_DOM_EXC port makes the
engine compare its domains with the hypervisor's; output the engine queues
for a ring connection is copied into the ring as soon as ``Server.flush``
sees it.

Flow control follows C: a ring whose replies do not fit (the guest is not
consuming them) or whose queued replies reach the domain's ``outstanding``
quota is not read until the guest catches up and kicks us. Nor is one
whose domain's write credit is negative (XSA-206, the engine's
``write_credit_wait``): a timer re-services it when the credit is back,
and only then, so an idle daemon still never wakes.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs
import trio

from pyxenstored.config import SUPPORTED_FEATURES
from pyxenstored.effects import AttachRing, DetachRing, ResetRing
from pyxenstored.engine.domains import DomainStatus
from pyxenstored.persist.image import RingState
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE
from pyxenstored.ring.indices import BadRingError
from pyxenstored.ring.layout import RING_SIZE, Feature, RingError, RingPage
from pyxenstored.ring.ring import DEFAULT_FEATURES, ServerRing
from pyxenstored.ring.xen import (
    Dom0Page,
    GrantMapping,
    XenDomains,
    XenEventChannels,
    XenGrants,
    open_dom0_ring,
)

if TYPE_CHECKING:
    from pyxenstored.server.daemon import Server

log = logging.getLogger("pyxenstored.rings")

#: ``VIRQ_DOM_EXC``: Xen's "some domain changed state" interrupt.
VIRQ_DOM_EXC = 3
#: Replies a guest may leave queued when its quota says "unlimited".
DEFAULT_OUTSTANDING = 20


@attrs.define(eq=False)
class XenBackend:
    """The daemon's handles on the Xen libraries (or the stand-in for them)."""

    evtchn: XenEventChannels
    grants: XenGrants
    domains: XenDomains
    #: ``--event``: in a xenstore stub domain, the port of dom0's ring, which
    #: is then reached by grant rather than through ``/proc/xen/xsd_kva``.
    dom0_event: int | None = None

    def exists(self, domid: int) -> bool:
        """The engine's ``DomainInfo``: a domain exists unless Xen says it is gone or dying."""
        state = self.domains.state(domid)
        return state is not None and not state.dying

    def close(self) -> None:
        self.grants.close()
        self.evtchn.close()
        self.domains.close()


def open_xen(dom0_event: int | None = None) -> XenBackend | None:
    """The Xen backend, or None on a machine without Xen (socket clients only)."""
    opened: list[XenEventChannels | XenGrants | XenDomains] = []
    try:
        evtchn = XenEventChannels()
        opened.append(evtchn)
        grants = XenGrants()
        opened.append(grants)
        domains = XenDomains()
    except OSError as exc:
        for handle in opened:
            handle.close()
        log.info("no Xen (%s): serving socket clients only", exc)
        return None
    return XenBackend(evtchn, grants, domains, dom0_event)


@attrs.define(eq=False)
class RingConnection:
    conn_id: int
    domid: int
    mapping: GrantMapping | Dom0Page
    page: RingPage
    ring: ServerRing
    port: int
    decoder: Decoder = attrs.field(factory=Decoder)
    #: What is left of the message being copied into the ring; the rest of
    #: the backlog stays in the engine's bounded outbox.
    outgoing: bytearray = attrs.field(factory=bytearray)
    #: The state last handed to the journal (``Rings.take_states``).
    journaled: RingState | None = None

    def state(self, replies: list[bytes]) -> RingState:
        req_cons, rsp_prod = self.ring.positions()
        return {
            "req_cons": req_cons,
            "rsp_prod": rsp_prod,
            "partial": self.decoder.pending,
            "outgoing": bytes(self.outgoing),
            "replies": replies,
        }


class Rings:
    """Every introduced domain's ring, served from one event channel handle."""

    def __init__(self, server: Server, xen: XenBackend) -> None:
        self.server = server
        self.evtchn = evtchn = xen.evtchn
        self.grants = xen.grants
        self.domains = xen.domains
        self.by_conn: dict[int, RingConnection] = {}
        self.by_port: dict[int, RingConnection] = {}
        self.virq_port = evtchn.bind_virq(VIRQ_DOM_EXC)
        #: Rings whose indices moved (or whose pending bytes changed) since
        #: the last ``publish``.
        self.moved: set[int] = set()
        #: States found by crash recovery, applied when each ring re-attaches.
        self.restored: dict[int, RingState] = server.restored_rings
        #: Rings not read for lack of write credit, and when (trio clock)
        #: to service them again.
        self.credit_waits: dict[int, float] = {}
        #: The rate-limit timer's sleep, whose deadline a new wait may advance.
        self._credit_sleep: trio.CancelScope | None = None

    # -- effects from the engine ----------------------------------------

    def apply(self, effect: AttachRing | ResetRing | DetachRing) -> None:
        if isinstance(effect, AttachRing):
            self._attach(effect)
        elif isinstance(effect, ResetRing):
            self._reset(effect)
        else:
            self._detach(effect.conn_id)

    def discover(self) -> None:
        """Introduce the domains already running whose ring page names its port
        (C >= 4.21 at start-up; dom0less guests). Others wait for INTRODUCE."""
        engine = self.server.engine
        for domid, state in sorted(self.domains.states().items()):
            if domid in (engine.config.priv_domid, engine.config.store_domid) or state.dying:
                continue
            known = engine.domains.get(domid)
            if known is not None and known.introduced:
                continue  # restored after a crash: its ring is re-attached as it was
            try:
                mapping = self.grants.map_ring(domid)
            except OSError:
                continue  # no xenstore ring: a "no-xenstore" guest
            page = RingPage(mapping.buffer)
            port = ServerRing(page).evtchn_port
            page.release()
            mapping.close()
            if port:
                log.info("domain %d: found running, introducing it (port %d)", domid, port)
                engine.introduce_domain(domid, port)
        self.server.flush()
        # Restored domains may have died while no daemon was watching.
        self.check_domains()

    def attach_local(self, dom0_event: int | None) -> None:
        """Serve dom0's kernel: through ``/proc/xen/xsd_kva`` when we run in dom0,
        or by grant and the ``--event`` port when we run in a stub domain (spec 7.6)."""
        engine = self.server.engine
        mapping: GrantMapping | Dom0Page
        try:
            if dom0_event is None:
                mapping, port = open_dom0_ring()
            else:
                mapping, port = self.grants.map_ring(engine.config.priv_domid), dom0_event
        except OSError as exc:
            log.info("no ring for dom0's kernel (%s)", exc)
            return
        conn_id = engine.connect_local_ring()
        self._attach_mapping(AttachRing(engine.config.priv_domid, conn_id, port), mapping)

    def _attach(self, effect: AttachRing) -> None:
        try:
            mapping = self.grants.map_ring(effect.domid)
        except OSError as exc:
            log.warning("domain %d: cannot map its ring: %s", effect.domid, exc)
            self.server.engine.ignore_connection(effect.conn_id)
            return
        self._attach_mapping(effect, mapping)

    def _attach_mapping(self, effect: AttachRing, mapping: GrantMapping | Dom0Page) -> None:
        engine = self.server.engine
        page = RingPage(mapping.buffer)
        # The domain's features (SET_FEATURE may have narrowed them, spec
        # 1.5) plus what the ring itself offers (reconnection).
        domain = engine.domains.get(effect.domid)
        features = domain.features if domain is not None else SUPPORTED_FEATURES
        ring = ServerRing(page, DEFAULT_FEATURES | Feature(features), deferred=True)
        # A port the builder left in the page wins over INTRODUCE's (spec 1.5).
        remote = ring.evtchn_port or effect.port
        try:
            port = self.evtchn.bind_interdomain(effect.domid, remote)
        except OSError as exc:
            log.warning("domain %d: cannot bind port %d: %s", effect.domid, remote, exc)
            page.release()
            mapping.close()
            engine.ignore_connection(effect.conn_id)
            return
        conn = RingConnection(effect.conn_id, effect.domid, mapping, page, ring, port)
        self.by_conn[conn.conn_id] = conn
        self.by_port[port] = conn
        restored = self.restored.pop(effect.domid, None)
        if restored is not None:
            # Where the dead daemon's journal left this ring: the indices it
            # had not published yet, the half-read request, the half-sent reply.
            ring.resume(restored["req_cons"], restored["rsp_prod"])
            conn.decoder = Decoder(restored["partial"])
            conn.outgoing[:] = restored["outgoing"]
            conn.journaled = restored
        ring.connect()
        self.moved.add(conn.conn_id)
        log.info("domain %d: ring attached (port %d)", effect.domid, port)
        self._service(conn)

    def _reset(self, effect: ResetRing) -> None:
        conn = self.by_conn.get(effect.conn_id)
        if conn is None:
            return
        self.by_port.pop(conn.port, None)
        self.evtchn.unbind(conn.port)
        try:
            conn.port = self.evtchn.bind_interdomain(effect.domid, effect.port)
        except OSError as exc:
            log.warning("domain %d: cannot rebind port %d: %s", effect.domid, effect.port, exc)
            self._detach(conn.conn_id)
            self.server.engine.ignore_connection(effect.conn_id)
            return
        self.by_port[conn.port] = conn
        conn.decoder = Decoder()
        conn.outgoing.clear()
        if conn.ring.ignored is None:
            conn.ring.complete_reconnect()
        self.moved.add(conn.conn_id)

    def _detach(self, conn_id: int) -> None:
        conn = self.by_conn.pop(conn_id, None)
        if conn is None:
            return
        self.by_port.pop(conn.port, None)
        self.credit_waits.pop(conn_id, None)
        try:
            self.evtchn.unbind(conn.port)
        finally:
            conn.page.release()
            conn.mapping.close()
        log.info("domain %d: ring detached", conn.domid)

    # -- moving bytes ---------------------------------------------------

    def write_output(self, conn_id: int) -> None:
        """Copy what the engine queued for a ring connection into its ring;
        the guest sees it at ``publish``."""
        conn = self.by_conn.get(conn_id)
        if conn is None:
            return
        self._push(conn)

    def take_states(self) -> list[tuple[int, RingState]]:
        """The states of the rings that changed since last asked, for the
        journal record that must precede ``publish``."""
        engine = self.server.engine
        changed = []
        for conn_id in self.moved:
            conn = self.by_conn.get(conn_id)
            if conn is None or conn.ring.ignored is not None:
                continue
            engine_conn = engine.connections.get(conn_id)
            replies = engine_conn.outbox.pending_replies() if engine_conn is not None else []
            state = conn.state(replies)
            if state != conn.journaled:
                conn.journaled = state
                changed.append((conn.domid, state))
        return changed

    def publish(self) -> None:
        """Show each guest what its ring got since the last call, and kick it."""
        for conn_id in self.moved:
            conn = self.by_conn.get(conn_id)
            if conn is not None and conn.ring.ignored is None:
                conn.ring.publish()
                self._notify(conn)
        self.moved.clear()

    def _push(self, conn: RingConnection) -> None:
        """Fill the ring from the engine's queue until it is full or nothing is left."""
        engine = self.server.engine
        ring = conn.ring
        while ring.ignored is None:
            if not conn.outgoing:
                conn.outgoing += engine.take_output(conn.conn_id, RING_SIZE)
                if not conn.outgoing:
                    return
            self.moved.add(conn.conn_id)
            try:
                sent = ring.write_responses(conn.outgoing)
            except BadRingError as exc:
                self._ignore(conn, exc.error)
                return
            del conn.outgoing[:sent]
            if conn.outgoing:
                self.server.want_clock()  # what stays queued may expire
                return  # the ring is full: the guest's next kick resumes

    def _notify(self, conn: RingConnection) -> None:
        if conn.ring.take_notify():
            self.evtchn.notify(conn.port)

    def _ignore(self, conn: RingConnection, error: RingError) -> None:
        """XSA-325: the guest broke its ring; keep the domain until it dies."""
        log.warning("domain %d: ring ignored (error %s)", conn.domid, error.name)
        conn.ring.ignore(error)
        conn.outgoing.clear()
        self.server.engine.ignore_connection(conn.conn_id)

    def _room(self, conn: RingConnection) -> bool:
        """Whether more requests may be read: C stops at the outstanding quota,
        and while the domain's write credit is negative (then the timer
        comes back when it is not)."""
        engine = self.server.engine
        limit = engine.outstanding_limit(conn.conn_id) or DEFAULT_OUTSTANDING
        if conn.outgoing or engine.queued_replies(conn.conn_id) >= limit:
            return False
        now = trio.current_time()
        wait = engine.write_credit_wait(conn.conn_id, now)
        if wait > 0:
            self._wake_later(conn.conn_id, now + wait)
            return False
        return True

    def _read_size(self, conn: RingConnection) -> int:
        """Bytes to take from the ring: all there are, or, while the write-rate
        limit applies, only the rest of one message, since C reads requests
        one at a time and checks for credit before each."""
        if not self.server.engine.write_rate_applies(conn.conn_id):
            return RING_SIZE
        pending = len(conn.decoder.pending)
        if pending < HEADER_SIZE:
            return HEADER_SIZE - pending
        length = HEADER.unpack_from(conn.decoder.pending)[3]
        return HEADER_SIZE + length - pending

    def _wake_later(self, conn_id: int, at: float) -> None:
        """Service a rate-limited ring again at ``at``."""
        self.credit_waits[conn_id] = at
        sleep = self._credit_sleep
        if sleep is not None and at < sleep.deadline:
            sleep.deadline = at

    async def _wake_rate_limited(self) -> None:
        """Re-service rings once their write credit is back; sleeps for ever
        while none waits (an idle daemon does not wake)."""
        waits = self.credit_waits
        while True:
            with trio.CancelScope(deadline=min(waits.values(), default=math.inf)) as sleep:
                self._credit_sleep = sleep
                await trio.sleep_forever()
            self._credit_sleep = None
            now = trio.current_time()
            for conn_id, at in list(waits.items()):
                if at <= now and waits.pop(conn_id, None) is not None:
                    conn = self.by_conn.get(conn_id)
                    if conn is not None:
                        self._service(conn)

    def _service(self, conn: RingConnection) -> None:
        """One kick: reconnect if asked, send what waits, read and answer requests."""
        ring = conn.ring
        server = self.server
        if ring.ignored is not None:
            return
        if ring.reconnect_requested():
            conn.decoder = Decoder()
            conn.outgoing.clear()
            server.engine.reset_connection(conn.conn_id)
            ring.complete_reconnect()
            self.moved.add(conn.conn_id)
        self._push(conn)
        try:
            while ring.ignored is None and self._room(conn):
                data = ring.read_requests(self._read_size(conn))
                if not data:
                    break
                self.moved.add(conn.conn_id)
                packets = conn.decoder.feed(data)
                if packets:
                    server.handle_packets(conn.conn_id, packets)
                conn.decoder.feed(b"")
        except BadRingError as exc:
            self._ignore(conn, exc.error)
        except ProtocolError as exc:
            log.warning("domain %d: %s", conn.domid, exc)
            self._ignore(conn, RingError.PROTO)
        # Journal what is left (a partial request, say), then publish.
        server.flush()

    # -- the event loop -------------------------------------------------

    def check_domains(self) -> None:
        try:
            states = self.domains.states()
        except OSError as exc:
            # Better to miss one change than to stop serving: the next
            # VIRQ_DOM_EXC brings a fresh scan.
            log.error("cannot read domain states: %s", exc)
            return
        self.server.engine.check_domains(
            {domid: DomainStatus(state.shutdown, state.dying) for domid, state in states.items()}
        )
        self.server.flush()

    async def run(self) -> None:
        """Serve kicks, and rings whose write credit is back, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._wake_rate_limited)
            await self._serve_kicks()

    async def _serve_kicks(self) -> None:
        """Service each ring kicked; an idle daemon sleeps in the kernel."""
        evtchn = self.evtchn
        fd = evtchn.fileno()
        while True:
            await trio.lowlevel.wait_readable(fd)
            port = evtchn.pending()
            if port is None:
                continue  # a spurious wake-up
            evtchn.unmask(port)
            if port == self.virq_port:
                self.check_domains()
                continue
            conn = self.by_port.get(port)
            if conn is not None:
                self._service(conn)

    def release(self) -> list[tuple[int, int, RingState]]:
        """Let go of every ring and port, so that a live update's new instance
        can bind them (Xen lets one process at a time bind a guest's port,
        and VIRQ_DOM_EXC once): (domid, connection id, state) of each ring,
        for the new instance or for ``reattach``."""
        released = [(conn.domid, conn.conn_id, conn.state([])) for conn in self.by_conn.values()]
        self.close()
        return released

    def reattach(self, released: list[tuple[int, int, RingState]],
                 dom0_event: int | None) -> None:
        """Undo ``release``: the update failed and this instance serves on."""
        engine = self.server.engine
        self.virq_port = self.evtchn.bind_virq(VIRQ_DOM_EXC)
        self.restored.update((domid, state) for domid, _, state in released)
        for domid, conn_id, _ in released:
            domain = engine.domains.get(domid)
            if domid == engine.config.priv_domid:
                self.attach_local(dom0_event)
            elif domain is not None:
                self._attach(AttachRing(domid, conn_id, domain.port))

    def close(self) -> None:
        for conn_id in list(self.by_conn):
            self._detach(conn_id)
        self.evtchn.unbind(self.virq_port)
