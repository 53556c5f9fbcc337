"""XSA-325 (CVE-2020-29483): dropping a misbehaving guest's connection fired
``@releaseDomain`` too early (while the domain still ran), and never again
when the domain really died.

Attack: a guest corrupts its ring (bad indices) so that the daemon stops
serving it, hoping the toolstack takes the domain for dead (and frees its
resources, or reuses them) while it still runs.

Expected (spec 5.6, 7.5): the connection is ignored but the domain record
stays: it is still introduced, its nodes stay, no ``@releaseDomain`` fires;
when the domain really dies, exactly one plain event (and one per-domain
event) fires, and later scans fire nothing more.

Layers: the pure engine (``ignore_connection`` is what the shell calls on a
bad ring, then ``check_domains``), and pyxenstored on the stand-in
hypervisor with real ring corruption. The C/OCaml ring variant is in
tests/fakexen/test_fakexen_advisories.py.
"""

from __future__ import annotations

from pathlib import Path

from engine_harness import World

from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op


def test_ignored_connection_keeps_domain_until_death(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.ok(d0, Op.WATCH, "@releaseDomain", "plain")
    h.ok(d0, Op.WATCH, "@releaseDomain", "per", "1")
    h.ok(g5, Op.WATCH, "data", "mine")
    h.events(d0)
    h.events(g5)
    h.engine.ignore_connection(g5)
    assert h.engine.connections[g5].ignored
    assert h.events(d0) == []
    assert h.ok(d0, Op.IS_DOMAIN_INTRODUCED, "5") == b"T\0"
    assert h.read(d0, "/local/domain/5/data") == b"d"
    assert not h.engine.connections[g5].watches  # its state is forgotten
    # Scans while it runs, or is merely shut down once, do not release it.
    h.engine.check_domains({5: DomainStatus(), 6: DomainStatus()})
    assert h.events(d0) == []
    h.engine.check_domains({5: DomainStatus(shutdown=True), 6: DomainStatus()})
    assert h.events(d0) == [("@releaseDomain/5", "per"), ("@releaseDomain", "plain")]
    assert h.ok(d0, Op.IS_DOMAIN_INTRODUCED, "5") == b"T\0"
    # Real death: exactly one of each.
    h.engine.check_domains({5: DomainStatus(dying=True), 6: DomainStatus()})
    assert sorted(h.events(d0)) == [("@releaseDomain", "plain"), ("@releaseDomain/5", "per")]
    assert h.ok(d0, Op.IS_DOMAIN_INTRODUCED, "5") == b"F\0"
    for _ in range(3):
        h.engine.check_domains({6: DomainStatus()})
        assert h.events(d0) == []
    # The other guest never noticed.
    h.write_ok(world.g6, "alive", b"yes")
    assert h.read(d0, "/local/domain/6/alive") == b"yes"


def test_ignored_guest_vanishing_fires_once(world: World) -> None:
    h, d0 = world.h, world.dom0
    h.ok(d0, Op.WATCH, "@releaseDomain", "plain")
    h.events(d0)
    h.engine.ignore_connection(world.g5)
    h.engine.ignore_connection(world.g5)  # twice is harmless
    assert h.events(d0) == []
    h.engine.check_domains({6: DomainStatus()})
    assert h.events(d0) == [("@releaseDomain", "plain")]
    h.engine.check_domains({6: DomainStatus()})
    assert h.events(d0) == []


def test_live_daemon_corrupt_ring(fakexen_library: Path, tmp_path: Path) -> None:
    from advisory_support import XENSTORE_ERROR_RINGIDX, Harness, wait_until

    h = Harness("py", tmp_path)
    try:
        h.dom0.watch("@releaseDomain", "rel")
        assert h.dom0.next_event() == ("@releaseDomain", "rel")
        g = h.guest(5)
        g.write("data", "1")
        g.set_indices(req_cons=0, req_prod=5000)
        g.notify()
        wait_until(lambda: g.ring_error == XENSTORE_ERROR_RINGIDX, "the ring is flagged")
        assert h.dom0.next_event(0.3) is None, "@releaseDomain for a live domain"
        assert h.dom0.is_introduced(5)
        assert h.dom0.read("/local/domain/5/data") == b"1"
        h.fx.set_domain(5, "dying")
        h.fx.raise_virq()
        assert h.dom0.next_event() == ("@releaseDomain", "rel")
        h.fx.set_domain(5, None)
        h.fx.raise_virq()
        assert h.dom0.next_event(0.3) is None, "a second @releaseDomain"
        assert not h.dom0.is_introduced(5)
    finally:
        status = h.close()
    assert status is not None, "pyxenstored crashed"

