"""XSA-421 (CVE-2022-42325, CVE-2022-42326): unlimited nodes through
create-then-delete inside a transaction, or through a partially applied
commit, because the per-domain node count drifted from the real one.

Attack: a guest, inside transactions, creates nodes and deletes them again
(or deletes and re-creates, or changes owners back and forth), commits or
aborts, in loops; or has its commit refused part-way (quota, conflict).
Each cycle that leaves the counter lower than the truth frees quota it
does not have.

Expected: after every such transaction the accounted node count and memory
equal a recount from the tree (``check_tree``: nothing to repair, CONTROL
``check`` OK), the guest can never own quota - 1 + 1 nodes, and a refused
commit changes nothing.

Layer: the pure engine.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness
from security_support import make_home

from pyxenstored.protocol.ops import Op

QUOTA = 30


@pytest.fixture
def guest(h: Harness) -> int:
    conn = make_home(h, 5)
    h.set_quota(5, "nodes", QUOTA)
    return conn


def _accounted(h: Harness, domid: int) -> tuple[int, int]:
    usage = h.engine.tree.accounting.of(domid)
    return usage.nodes, usage.memory


def _sound(h: Harness) -> None:
    before = _accounted(h, 5)
    assert h.consistent() == []  # nothing to repair
    assert _accounted(h, 5) == before
    assert before[0] == h.recount(5)
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
def test_create_then_delete_in_transaction(h: Harness, guest: int, commit: bool) -> None:
    for round_ in range(20):
        tx = h.start(guest)
        for i in range(10):
            h.write_ok(guest, f"tmp/{i}/x", b"v" * 50, tx=tx)
        h.ok(guest, Op.RM, "tmp", tx=tx)
        h.write_ok(guest, f"kept{round_ % 3}", b"k", tx=tx)
        assert h.end(guest, tx, commit=commit) == "OK"
        _sound(h)
    assert h.recount(5) == (4 if commit else 1)


def test_delete_then_recreate_and_owner_flips(h: Harness, guest: int) -> None:
    for i in range(10):
        h.write_ok(guest, f"n{i}/leaf", b"v")
    _sound(h)
    for _ in range(10):
        tx = h.start(guest)
        h.ok(guest, Op.RM, "n0", tx=tx)
        h.write_ok(guest, "n0/leaf/again", b"v", tx=tx)
        h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5/n1", "n0")  # outside: conflict-free
        h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5/n1", "n5")
        assert h.end(guest, tx) == "OK"
        _sound(h)
        tx = h.start(h.dom0)
        h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5/n2/leaf", "n0", tx=tx)
        h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5/n2/leaf", "n5", tx=tx)
        h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5/n3", "n0", tx=tx)
        assert h.end(h.dom0, tx) == "OK"
        h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5/n3", "n5")
        _sound(h)


def test_refused_commits_change_nothing(h: Harness, guest: int) -> None:
    for i in range(QUOTA - 12):
        h.write_ok(guest, f"fill{i}")
    _sound(h)
    # Conflict: EAGAIN; nothing applied.
    tx = h.start(guest)
    h.write_ok(guest, "c/1/2/3", b"", tx=tx)
    h.read(guest, "fill0", tx=tx)
    h.write_ok(h.dom0, "/local/domain/5/fill0", b"changed")
    assert h.end(guest, tx) == "EAGAIN"
    assert h.err(guest, Op.READ, "c") == "ENOENT"
    _sound(h)
    # Quota at commit: two transactions that each fit, together too many.
    first, second = h.start(guest), h.start(guest)
    for tx, name in ((first, "p"), (second, "q")):
        for i in range(8):
            h.write_ok(guest, f"{name}{i}", b"", tx=tx)
        h.ok(guest, Op.RM, "fill1", tx=tx)  # and delete a shared one
    assert h.end(guest, first) == "OK"
    _sound(h)
    assert h.end(guest, second) in ("ENOSPC", "EAGAIN")
    assert h.err(guest, Op.READ, "q0") == "ENOENT"
    _sound(h)
    # The quota holds exactly: quota - 1 nodes in all.
    i = 0
    while h.write(guest, f"last{i}")[0] == Op.WRITE:
        i += 1
    assert h.recount(5) == QUOTA - 1
    _sound(h)
