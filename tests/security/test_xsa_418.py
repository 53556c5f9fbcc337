"""XSA-418 (CVE-2022-42321): stack exhaustion through recursion on deep trees.

Attack: dom0 (or a guest with raised quotas) builds a path about 1,000
levels deep with short names, then makes the daemon walk it: DIRECTORY at
the bottom, RM of the top (recursive delete), CONTROL ``check`` (the store
verifier), a transaction over it, and the death (RELEASE) of a domain that
owns the whole chain (orphan cleanup). Python's recursion limit makes any
per-level recursion fatal.

Expected: every one of these works with the interpreter's recursion limit
lowered to 200 (so a single frame per level would fail), the results are
right (all 1,000 levels removed, events fired, the tree consistent), and
accounting matches a recount.

Layer: the pure engine. (Live update is not implemented yet; when it is,
its dump/restore of such a tree belongs here too.)
"""

from __future__ import annotations

from engine_harness import Harness
from security_support import make_home

from pyxenstored.protocol.ops import Op

DEPTH = 1000
DEEP = "/d" + "/a" * (DEPTH - 1)


def test_deep_write_directory_rm(h: Harness, low_recursion_limit: None) -> None:
    h.write_ok(h.dom0, DEEP, b"bottom")
    assert DEEP.count("/") == DEPTH
    assert h.read(h.dom0, DEEP) == b"bottom"
    assert h.directory(h.dom0, DEEP[:-2]) == ["a"]
    assert h.directory(h.dom0, DEEP) == []
    h.watch(h.dom0, "/d", "top")
    h.watch(h.dom0, DEEP, "bottom")
    before = len(h.engine.tree.nodes)
    h.ok(h.dom0, Op.RM, "/d")
    assert sorted(h.events(h.dom0)) == [("/d", "top"), (DEEP, "bottom")]
    assert len(h.engine.tree.nodes) == before - DEPTH
    assert h.consistent() == []


def test_deep_check(h: Harness, low_recursion_limit: None) -> None:
    h.write_ok(h.dom0, DEEP, b"bottom")
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"
    assert h.consistent() == []
    h.engine.tree.accounting.of(0).nodes += 5  # a skew "check" must repair
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"
    assert h.consistent() == []


def test_deep_transaction(h: Harness, low_recursion_limit: None) -> None:
    h.write_ok(h.dom0, DEEP, b"bottom")
    tx = h.start(h.dom0)
    assert h.read(h.dom0, DEEP, tx=tx) == b"bottom"
    h.ok(h.dom0, Op.RM, "/d/a", tx=tx)
    h.write_ok(h.dom0, "/d/b" + "/c" * (DEPTH - 2), b"new", tx=tx)
    assert h.end(h.dom0, tx) == "OK"
    assert h.err(h.dom0, Op.READ, DEEP) == "ENOENT"
    assert h.read(h.dom0, "/d/b" + "/c" * (DEPTH - 2)) == b"new"
    assert h.consistent() == []


def test_deep_tree_of_released_domain(h: Harness, low_recursion_limit: None) -> None:
    """Orphan cleanup of a dead domain's 1,000-level chain (spec 3.6)."""
    guest = make_home(h, 5)
    h.set_quota(5, "path-max", 0)
    h.set_quota(5, "nodes", 0)
    h.set_quota(5, "memory", 0)
    h.write_ok(guest, "x" + "/y" * (DEPTH - 1), b"")
    assert h.recount(5) == DEPTH + 1
    h.ok(h.dom0, Op.WATCH, "/local/domain/5/x" + "/y" * (DEPTH - 1), "w")
    h.events(h.dom0)
    h.ok(h.dom0, Op.RELEASE, "5")
    assert h.recount(5) == 0
    assert h.err(h.dom0, Op.READ, "/local/domain/5") == "ENOENT"
    assert h.events(h.dom0) == [("/local/domain/5/x" + "/y" * (DEPTH - 1), "w")]
    assert h.consistent() == []
