"""XSA-233 (CVE-2017-14317): a double free when a domain and its device-model
stub domain die together.

Attack: dom0 makes domain 6 the device model of domain 5 (SET_TARGET 6 5),
so 6's connection also acts as 5 and holds a reference to 5. Both domains
are then destroyed in the same VIRQ_DOM_EXC scan, in either order, so the
cleanup of one runs while the other is half torn down.

Expected: no crash or exception; both domains are gone (not introduced,
no records), every node either owned (including those the stubdom created
in its target's tree) is deleted, ACL entries naming them are stripped,
accounting matches a recount, ``@releaseDomain`` fires once per domain, and
the domids can be reused with no inherited target relationship.

Layer: the pure engine; both deaths go through one
``engine.check_domains({...})`` call, as the shell makes after the VIRQ.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness
from security_support import make_home

from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op

DEATHS = {
    "both-vanished": {},
    "both-dying": {5: DomainStatus(dying=True), 6: DomainStatus(dying=True)},
    "target-dying-stub-vanished": {5: DomainStatus(dying=True)},
    "stub-dying-target-vanished": {6: DomainStatus(dying=True)},
}


def _scene(h: Harness, stub_first: bool) -> tuple[int, int]:
    if stub_first:  # domain table order decides the scan order
        stub, guest = make_home(h, 6, 8), make_home(h, 5)
    else:
        guest, stub = make_home(h, 5), make_home(h, 6, 8)
    h.ok(h.dom0, Op.SET_TARGET, "6", "5")
    h.write_ok(guest, "data", b"g")
    # The stubdom works in its target's tree; what it creates is its own.
    h.write_ok(stub, "/local/domain/5/device-model/state", b"running")
    assert h.perms(h.dom0, "/local/domain/5/device-model/state")[0] == "n6"
    assert h.read(stub, "/local/domain/5/data") == b"g"  # acts as 5
    h.write_ok(h.dom0, "/vm/shared", b"s")
    h.ok(h.dom0, Op.SET_PERMS, "/vm/shared", "n0", "r5", "b6")
    h.ok(guest, Op.WATCH, "data", "g-watch")
    h.ok(stub, Op.WATCH, "/local/domain/5", "s-watch")
    tx = h.start(stub)
    h.write_ok(stub, "/local/domain/5/device-model/pending", b"p", tx=tx)
    return guest, stub


@pytest.mark.parametrize("stub_first", [False, True], ids=["target-first", "stub-first"])
@pytest.mark.parametrize("death", sorted(DEATHS))
def test_destroy_domain_and_stubdom_together(h: Harness, death: str, stub_first: bool) -> None:
    _scene(h, stub_first)
    h.ok(h.dom0, Op.WATCH, "@releaseDomain", "per-domain", "1")
    h.ok(h.dom0, Op.WATCH, "/local/domain", "tree")
    h.events(h.dom0)
    h.engine.check_domains(DEATHS[death])
    for domid in ("5", "6"):
        assert h.ok(h.dom0, Op.IS_DOMAIN_INTRODUCED, domid) == b"F\0"
    assert set(h.engine.domains.domains) == {0}
    assert h.directory(h.dom0, "/local/domain") == []
    assert h.perms(h.dom0, "/vm/shared") == ["n0"]
    assert h.recount(5) == h.recount(6) == 0
    assert h.consistent() == []
    assert len(h.engine.connections) == 1  # dom0's socket only
    assert not any(key.startswith("/local/domain/") for key in h.engine.watches.by_path)
    releases = [path for path, token in h.events(h.dom0) if token == "per-domain"]
    assert sorted(releases) == ["@releaseDomain/5", "@releaseDomain/6"]
    # A second scan finds nothing more to do.
    h.engine.check_domains({})
    assert h.events(h.dom0) == []


def test_domids_reused_after_joint_death(h: Harness) -> None:
    """New domains 5 and 6 start unrelated: 6 is nobody's device model."""
    _scene(h, False)
    h.engine.check_domains({})
    guest = make_home(h, 5)
    stub = make_home(h, 6, 8)
    h.write_ok(guest, "secret", b"s")
    assert h.err(stub, Op.READ, "/local/domain/5/secret") == "EACCES"
    assert h.err(stub, Op.WRITE, "/local/domain/5/x\0y") == "EACCES"
    assert h.err(stub, Op.READ, "/vm/shared") == "EACCES"
    assert h.recount(6) == 1


def test_target_dies_alone_then_stub(h: Harness) -> None:
    """The target dies first, the stubdom in a later scan: no crash, and
    the stubdom's nodes in the dead target's tree went with that tree."""
    _scene(h, False)
    h.engine.check_domains({6: DomainStatus()})
    assert h.ok(h.dom0, Op.IS_DOMAIN_INTRODUCED, "6") == b"T\0"
    assert h.err(h.dom0, Op.READ, "/local/domain/5") == "ENOENT"
    assert h.consistent() == []
    h.engine.check_domains({})
    assert set(h.engine.domains.domains) == {0}
    assert h.recount(6) == 0
    assert h.consistent() == []
