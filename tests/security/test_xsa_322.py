"""XSA-322 (CVE-2020-29481): a new domain inherited the ACL entries of a dead
domain that had the same domid.

Attack: dom0 (or a guest) grants domain N access to a node; N dies; the
toolstack later creates a new domain that gets the same domid N, which then
reads or writes through the dead domain's entries.

Expected (spec 3.5, 3.6): the new N has no access. C gets there three ways,
all exercised here: cleanup on death (entries naming N are stripped, N's
nodes deleted); the generation check (an entry for a domain that did not
exist when the permissions were set is flagged IGNORE and never matches);
and Xen's unique_id, which tells a re-created domid from the old domain.

Layer: the pure engine, with a stand-in ``DomainInfo`` (``Hypervisor``)
so that domain existence is under the test's control; deaths go through
``check_domains`` (dying or vanished) and RELEASE.

A domain record made for a domid that is never introduced (dom0 set
permissions naming it) is destroyed like any other when the domain goes,
so its grants do not survive for the next domain with that domid (C frees
such records, and its generation check flags the entry stale anyway).

Known gap: there is no unique_id: a domid that dies and is re-created between two
  scans cannot be told apart (``DomainStatus`` carries no identity), so that
  path is not testable here.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness
from security_support import Hypervisor, harness_with, make_home

from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op


def _grants(h: Harness) -> None:
    h.write_ok(h.dom0, "/acl-r", b"secret")
    h.ok(h.dom0, Op.SET_PERMS, "/acl-r", "n0", "r7")
    h.write_ok(h.dom0, "/acl-b", b"secret")
    h.ok(h.dom0, Op.SET_PERMS, "/acl-b", "n0", "b7")


def _assert_no_access(h: Harness, conn: int) -> None:
    assert h.err(conn, Op.READ, "/acl-r") == "EACCES"
    assert h.err(conn, Op.READ, "/acl-b") == "EACCES"
    assert h.write(conn, "/acl-b", b"x") == (16, b"EACCES\0")
    assert h.err(conn, Op.DIRECTORY, "/acl-b") == "EACCES"
    assert h.read(h.dom0, "/acl-b") != b"x"


def _kill(h: Harness, hv: Hypervisor, domid: int, how: str) -> None:
    if how == "release":
        h.ok(h.dom0, Op.RELEASE, str(domid))
        hv.alive.discard(domid)
        return
    if how == "dying":
        h.engine.check_domains({d: DomainStatus(dying=d == domid) for d in hv.alive})
    hv.alive.discard(domid)
    h.engine.check_domains({d: DomainStatus() for d in hv.alive})


@pytest.mark.parametrize("how", ["dying", "vanished", "release"])
def test_cleanup_path_new_domain_has_no_access(how: str) -> None:
    hv = Hypervisor(7)
    h = harness_with(hv)
    old = make_home(h, 7)
    _grants(h)
    assert h.read(old, "/acl-r") == b"secret"
    h.write_ok(old, "/acl-b", b"by-old-7")
    h.write_ok(old, "mine", b"m")
    _kill(h, hv, 7, how)
    # The dead domain's entries are gone, and so are its nodes.
    assert h.perms(h.dom0, "/acl-r") == ["n0"]
    assert h.perms(h.dom0, "/acl-b") == ["n0"]
    assert h.err(h.dom0, Op.READ, "/local/domain/7") == "ENOENT"
    hv.alive.add(7)
    new = make_home(h, 7)
    _assert_no_access(h, new)
    assert h.err(new, Op.READ, "mine") == "ENOENT"
    assert h.read(h.dom0, "/acl-b") == b"by-old-7"
    # A grant made to the new domain works.
    h.ok(h.dom0, Op.SET_PERMS, "/acl-r", "n0", "r7")
    assert h.read(new, "/acl-r") == b"secret"
    assert h.consistent() == []


def test_generation_path_grant_to_absent_domid_is_ignored() -> None:
    """Permissions naming a domid Xen does not know are kept (GET_PERMS
    shows them) but flagged stale: a domain created later gets nothing."""
    hv = Hypervisor()
    h = harness_with(hv)
    _grants(h)
    assert h.perms(h.dom0, "/acl-r") == ["n0", "r7"]
    hv.alive.add(7)
    new = make_home(h, 7)
    _assert_no_access(h, new)
    # An unknown owner is refused outright.
    assert h.set_perms(h.dom0, "/acl-r", "n9") == "ENOENT"


def test_generation_path_never_introduced_domain_dies() -> None:
    """dom0 grants domain 9 (which exists, but was never introduced, as when
    the toolstack prepares nodes before INTRODUCE); 9 dies; a new 9 is
    created and introduced: it must not get the old grant."""
    hv = Hypervisor(9)
    h = harness_with(hv)
    h.write_ok(h.dom0, "/secret", b"s")
    h.ok(h.dom0, Op.SET_PERMS, "/secret", "n0", "r9")
    hv.alive.discard(9)
    h.engine.check_domains({})
    hv.alive.add(9)
    new = make_home(h, 9)
    assert h.err(new, Op.READ, "/secret") == "EACCES"


def test_cleanup_of_guest_granted_entries() -> None:
    """Guest 8 grants 7 on its own node; 7 dies; the new 7 gets nothing."""
    hv = Hypervisor(7, 8)
    h = harness_with(hv)
    owner = make_home(h, 8, port=9)
    old = make_home(h, 7)
    h.write_ok(owner, "shared", b"v")
    h.ok(owner, Op.SET_PERMS, "shared", "n8", "b7")
    h.write_ok(old, "/local/domain/8/shared", b"by-7")
    _kill(h, hv, 7, "vanished")
    assert h.perms(h.dom0, "/local/domain/8/shared") == ["n8"]
    hv.alive.add(7)
    new = make_home(h, 7)
    assert h.err(new, Op.READ, "/local/domain/8/shared") == "EACCES"
    assert h.write(new, "/local/domain/8/shared", b"x")[1] == b"EACCES\0"
    assert h.read(owner, "shared") == b"by-7"
