"""Domain lifecycle as the shell reports it: ring effects, deaths, shutdowns, bad rings.

Spec 1.5 (INTRODUCE, RELEASE, RESUME), 5.6 (@releaseDomain forms), 7.5 (XSA-325).
"""

from engine_harness import Harness

from pyxenstored.effects import AttachRing, DetachRing, ResetRing
from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op


class _OnlyDom0:
    """A hypervisor that knows no domain but dom0."""

    def exists(self, domid: int) -> bool:
        return domid == 0


def _release_watches(h: Harness) -> None:
    h.watch(h.dom0, "@releaseDomain", "plain")
    h.watch(h.dom0, "@releaseDomain", "depth", "1")


def test_introduce_attaches_then_resets_the_ring() -> None:
    """Spec 1.5: the first INTRODUCE maps the ring; a second one rebinds and resets it."""
    h = Harness()
    conn = h.introduce(5, port=7)
    assert h.engine.take_effects() == [AttachRing(5, conn, 7)]
    h.ok(h.dom0, Op.INTRODUCE, "5", "123", "9")
    assert h.engine.take_effects() == [ResetRing(5, conn, 9)]


def test_release_detaches_the_ring() -> None:
    """Spec 1.5 RELEASE."""
    h = Harness()
    conn = h.introduce(5)
    h.engine.take_effects()
    h.ok(h.dom0, Op.RELEASE, "5")
    assert h.engine.take_effects() == [DetachRing(5, conn)]
    assert conn not in h.engine.connections


def test_death_fires_release_domain_once_in_both_forms() -> None:
    """Spec 5.6: a dead domain fires plain and per-domain forms, exactly once (XSA-325)."""
    h = Harness()
    h.introduce(5)
    h.introduce(6)
    _release_watches(h)
    h.engine.check_domains({0: DomainStatus(), 6: DomainStatus(), 5: DomainStatus(dying=True)})
    assert h.events(h.dom0) == [("@releaseDomain", "plain"), ("@releaseDomain/5", "depth")]
    h.engine.check_domains({0: DomainStatus(), 6: DomainStatus()})
    assert h.events(h.dom0) == []
    assert h.ok(h.dom0, Op.IS_DOMAIN_INTRODUCED, "5") == b"F\0"


def test_vanished_domain_is_destroyed_with_its_nodes() -> None:
    """Spec 3.6: the nodes a dead domain owned go with it."""
    h = Harness()
    guest = h.introduce(5)
    h.write_ok(h.dom0, "/local/domain/5")
    h.set_perms(h.dom0, "/local/domain/5", "n5")
    h.write_ok(guest, "data/x", b"1")
    assert h.recount(5) > 0
    h.engine.check_domains({0: DomainStatus()})
    assert h.recount(5) == 0
    assert h.consistent() == []


def test_shutdown_announced_once_until_resume() -> None:
    """Spec 5.6: per-domain form for the shutdown domain, then one plain event; RESUME re-arms."""
    h = Harness()
    h.introduce(5)
    _release_watches(h)
    down = {0: DomainStatus(), 5: DomainStatus(shutdown=True)}
    h.engine.check_domains(down)
    assert h.events(h.dom0) == [("@releaseDomain/5", "depth"), ("@releaseDomain", "plain")]
    h.engine.check_domains(down)
    assert h.events(h.dom0) == []
    h.ok(h.dom0, Op.RESUME, "5")
    h.engine.check_domains(down)
    assert h.events(h.dom0) == [("@releaseDomain/5", "depth"), ("@releaseDomain", "plain")]


def test_ignored_ring_keeps_its_domain_until_death() -> None:
    """Spec 7.5, XSA-325: a bad ring loses its state at once, @releaseDomain waits for death."""
    h = Harness()
    guest = h.introduce(5)
    h.watch(guest, "data", "mine")
    h.start(guest)
    _release_watches(h)
    h.engine.ignore_connection(guest)
    connection = h.engine.connections[guest]
    assert connection.ignored and not connection.watches and not connection.transactions
    assert h.events(h.dom0) == []
    assert h.ok(h.dom0, Op.IS_DOMAIN_INTRODUCED, "5") == b"T\0"
    h.engine.check_domains({0: DomainStatus()})
    assert h.events(h.dom0) == [("@releaseDomain", "plain"), ("@releaseDomain/5", "depth")]


def test_outstanding_limit_applies_to_guests_only() -> None:
    """Spec 6.1: the outstanding quota (20) binds unprivileged domains; dom0 is exempt."""
    h = Harness()
    guest = h.introduce(5)
    assert h.engine.outstanding_limit(guest) == 20
    assert h.engine.outstanding_limit(h.dom0) == 0


def test_unread_events_expire_for_guests_only() -> None:
    """Spec 5.7: after ``watch-event`` seconds unsent events to a guest are dropped."""
    h = Harness()
    guest = h.introduce(5)
    h.write_ok(h.dom0, "/local/domain/5")
    h.set_perms(h.dom0, "/local/domain/5", "n5")
    h.watch(guest, "x", "g")
    h.watch(h.dom0, "/local/domain/5/x", "d")
    h.engine.expire_events(100.0)
    h.write_ok(h.dom0, "/local/domain/5/x", b"1")
    h.engine.expire_events(119.0)
    h.engine.expire_events(121.0)
    assert h.events(guest) == []
    assert h.events(h.dom0) == [("/local/domain/5/x", "d")]


def test_introduce_of_a_domain_the_hypervisor_lacks_is_enoent() -> None:
    """Spec 1.5: C cannot map a missing domain's ring: ENOENT (found by fuzz diff)."""
    h = Harness()
    h.engine.domains.info = _OnlyDom0()
    assert h.err(h.dom0, Op.INTRODUCE, "7", "1", "3") == "ENOENT"
