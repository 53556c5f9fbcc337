"""XSA-272 (CVE-2018-15470): oxenstored did not apply the node quota
(quota-maxentity) on WRITE.

Attack: a guest with a node quota creates nodes by WRITE, by MKDIR, and by
writing deep paths whose missing ancestors are created implicitly, inside
and outside transactions, to own more nodes than its quota allows.

Expected (spec 6.1): every node a guest comes to own counts, implicit
parents included; creation is refused with ENOSPC once the count would
reach the quota (C's ``>=``: at most quota - 1 nodes), with nothing
created by the refused request; rewriting existing nodes still works;
dom0 is never limited.

Layer: the pure engine.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness
from security_support import make_home

from pyxenstored.protocol.ops import Op

QUOTA = 10


@pytest.fixture
def guest(h: Harness) -> int:
    conn = make_home(h, 5)
    h.set_quota(5, "nodes", QUOTA)
    assert h.recount(5) == 1  # its home
    return conn


def _fill(h: Harness, guest: int, op: int) -> int:
    created = 0
    for i in range(QUOTA * 2):
        payload = f"n{i}\0".encode() if op == Op.MKDIR else f"n{i}\0v".encode()
        type_, reply = h.raw(guest, op, payload)
        if type_ != op:
            assert reply == b"ENOSPC\0"
            return created
        created += 1
    raise AssertionError("the node quota was never hit")


@pytest.mark.parametrize("op", [Op.WRITE, Op.MKDIR], ids=["WRITE", "MKDIR"])
def test_quota_enforced_on_create(h: Harness, guest: int, op: int) -> None:
    assert _fill(h, guest, op) == QUOTA - 2  # home + 8 = 9 = quota - 1
    assert h.recount(5) == QUOTA - 1
    h.write_ok(guest, "n0", b"rewritten")  # not a new node
    h.ok(guest, Op.MKDIR, "n1")  # exists: no-op
    assert h.recount(5) == QUOTA - 1


def test_implicit_parents_count(h: Harness, guest: int) -> None:
    h.write_ok(guest, "a/b/c/d", b"v")  # 4 nodes
    assert h.recount(5) == 5
    # 4 more would make 9 (allowed); 5 more would make 10 (refused).
    assert h.write(guest, "x/y/z/w/v") == (16, b"ENOSPC\0")
    assert h.err(guest, Op.MKDIR, "x/y/z/w/v") == "ENOSPC"
    assert h.err(guest, Op.READ, "x") == "ENOENT"  # nothing partial
    assert h.recount(5) == 5
    h.ok(guest, Op.MKDIR, "x/y/z/w")
    assert h.recount(5) == QUOTA - 1
    assert h.write(guest, "a/b/c/e") == (16, b"ENOSPC\0")
    assert h.consistent() == []


def test_quota_enforced_at_transaction_commit(h: Harness, guest: int) -> None:
    """Each request in the transaction counts its pending nodes; two
    transactions that each fit cannot together exceed the quota."""
    tx = h.start(guest)
    h.write_ok(guest, "t/a/b/c", b"", tx=tx)  # 4 pending
    h.ok(guest, Op.MKDIR, "t/d", tx=tx)  # 5 pending: 6 in all
    h.write_ok(guest, "t/e/f", b"", tx=tx)  # 7 pending: 8 in all
    assert h.write(guest, "t/g/h", tx=tx)[1] == b"ENOSPC\0"  # 10
    assert h.end(guest, tx) == "ENOMEM"  # failed part-way: nothing committed
    assert h.recount(5) == 1
    first, second = h.start(guest), h.start(guest)
    h.write_ok(guest, "p/a/b/c/d", b"", tx=first)  # 5 new: 6 in all
    h.write_ok(guest, "q/a/b/c/d", b"", tx=second)  # 5 new: 6 in all
    assert h.end(guest, first) == "OK"
    assert h.recount(5) == 6
    assert h.end(guest, second) == "ENOSPC"  # 11 would exceed
    assert h.recount(5) == 6
    assert h.err(guest, Op.READ, "q") == "ENOENT"
    assert h.consistent() == []


def test_chowned_nodes_count_for_the_new_owner(h: Harness, guest: int) -> None:
    """Nodes dom0 gives the guest count against it, so the guest's own
    creations are refused once those fill its quota."""
    for i in range(QUOTA):  # dom0's nodes inherit the home's n5
        h.write_ok(h.dom0, f"/local/domain/5/given{i}")
    h.write_ok(h.dom0, "/given-away")
    h.ok(h.dom0, Op.SET_PERMS, "/given-away", "n5")
    assert h.recount(5) == QUOTA + 2
    assert h.write(guest, "mine")[1] == b"ENOSPC\0"


def test_dom0_is_not_limited(h: Harness, guest: int) -> None:
    for i in range(QUOTA * 3):
        h.write_ok(h.dom0, f"/dom0/n{i}/a", b"v")
    h.ok(h.dom0, Op.MKDIR, "/dom0/deep/x/y/z")
