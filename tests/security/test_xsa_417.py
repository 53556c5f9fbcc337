"""XSA-417 (CVE-2022-42320): a window in which a new domain with a reused
domid got access through stale ACL entries when a third party wrote the node.

Attack: as XSA-322 (domain N is granted access, dies, a new N appears), but
between the death and the new domain, and again afterwards, other parties
(dom0, or the guest that owns the node) write the node, its children, or
its permissions, or commit a transaction that was open across the death,
so that a stale entry is copied or re-stamped as fresh.

Expected (spec 3.5): no write, child creation, transaction commit or
``-K`` (keep orphans) handover revives the dead domain's entries: the new N
gets EACCES throughout, and no node created after the death names N.

Layer: the pure engine with a stand-in ``DomainInfo``.

With ``-K`` a dead domain's own nodes are handed to dom0 without the ACL
entries naming the dead domain, so the new domain gets no access to them.
"""

from __future__ import annotations

import pytest
from security_support import Hypervisor, harness_with, make_home

from pyxenstored.config import Config
from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op


@pytest.mark.parametrize("keep_orphans", [False, True], ids=["default", "-K"])
def test_third_party_writes_do_not_revive_stale_entries(keep_orphans: bool) -> None:
    hv = Hypervisor(7, 8)
    h = harness_with(hv, Config(keep_orphans=keep_orphans))
    owner = make_home(h, 8, port=9)
    old = make_home(h, 7)
    h.write_ok(owner, "shared", b"v1")
    h.ok(owner, Op.SET_PERMS, "shared", "n8", "r7")
    h.write_ok(h.dom0, "/acl", b"v1")
    h.ok(h.dom0, Op.SET_PERMS, "/acl", "n0", "b7")
    h.write_ok(old, "/acl/by7", b"x")  # a node the old 7 owns, under dom0's
    assert h.read(old, "/local/domain/8/shared") == b"v1"
    hv.alive.discard(7)
    h.engine.check_domains({8: DomainStatus()})
    # Third parties write while 7 does not exist ...
    h.write_ok(owner, "shared", b"v2")
    h.write_ok(owner, "shared/child", b"c")
    h.write_ok(h.dom0, "/acl", b"v2")
    h.write_ok(h.dom0, "/acl/child", b"c")
    hv.alive.add(7)
    new = make_home(h, 7)
    # ... and after the new 7 exists.
    h.write_ok(owner, "shared", b"v3")
    h.write_ok(h.dom0, "/acl", b"v3")
    for path in ("/local/domain/8/shared", "/local/domain/8/shared/child", "/acl",
                 "/acl/child"):
        assert h.err(new, Op.READ, path) == "EACCES", path
        assert not any(p.endswith("7") for p in h.perms(h.dom0, path)[1:]), path
    assert h.write(new, "/acl/x", b"y")[1] == b"EACCES\0"
    if keep_orphans:  # the old 7's node was handed to dom0
        assert h.perms(h.dom0, "/acl/by7")[0] == "n0"
    else:
        assert h.err(h.dom0, Op.READ, "/acl/by7") == "ENOENT"
    assert h.consistent() == []


def test_keep_orphans_handover_strips_dead_domain_entries() -> None:
    """-K: the old 7 created a node (perms n7 b7, inherited from dom0's
    ``n0 b7`` parent); at its death the node goes to dom0, and the b7 entry
    must go (or be ignored) with the domain: the new 7 gets EACCES."""
    hv = Hypervisor(7)
    h = harness_with(hv, Config(keep_orphans=True))
    old = make_home(h, 7)
    h.write_ok(h.dom0, "/acl", b"v1")
    h.ok(h.dom0, Op.SET_PERMS, "/acl", "n0", "b7")
    h.write_ok(old, "/acl/by7", b"x")
    assert h.perms(h.dom0, "/acl/by7") == ["n7", "b7"]
    hv.alive.discard(7)
    h.engine.check_domains({})
    assert h.perms(h.dom0, "/acl")[1:] == []  # the parent's entry is stripped
    hv.alive.add(7)
    new = make_home(h, 7)
    assert h.err(new, Op.READ, "/acl/by7") == "EACCES"


@pytest.mark.parametrize(("replay", "expected"), [(False, "EAGAIN"), (True, "OK")],
                         ids=["C", "replay"])
def test_transaction_open_across_the_death_cannot_revive(replay: bool, expected: str) -> None:
    """dom0 opened a transaction that saw the old entry (and created a child
    that inherits it); 7 dies, a new 7 appears; the commit must not install
    the stale entry. C: EAGAIN. Replayed (spec 4.3), the transaction runs
    again on the cleaned tree, so the child inherits the stripped entry."""
    hv = Hypervisor(7)
    h = harness_with(hv, Config(replay_max_requests=1024 if replay else 0))
    make_home(h, 7)
    h.write_ok(h.dom0, "/acl", b"v1")
    h.ok(h.dom0, Op.SET_PERMS, "/acl", "n0", "r7")
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/acl/child", b"c", tx=tx)
    h.write_ok(h.dom0, "/acl", b"v2", tx=tx)
    hv.alive.discard(7)
    h.engine.check_domains({})
    hv.alive.add(7)
    new = make_home(h, 7)
    result = h.end(h.dom0, tx)
    assert result == expected  # the cleanup changed /acl under the transaction
    for path in ("/acl", "/acl/child"):
        type_, _ = h.request(new, Op.READ, path)
        assert type_ == 16, path
    assert h.perms(h.dom0, "/acl") == ["n0"]
    if expected == "OK":
        assert h.perms(h.dom0, "/acl/child") == ["n0"]
        assert h.read(h.dom0, "/acl") == b"v2"
