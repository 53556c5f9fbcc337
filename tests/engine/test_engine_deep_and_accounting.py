"""XSA-418 deep trees without recursion, and accounting = recount (XSA-421, spec 1.6 check)."""

import sys
from collections.abc import Iterator

import pytest
from engine_harness import Harness, World

from pyxenstored.protocol.ops import Op

DEPTH = 1000
DEEP = "/d" + "/a" * (DEPTH - 1)


@pytest.fixture
def low_recursion_limit() -> Iterator[None]:
    """Any recursion per tree level would blow this limit on a 1,000-level tree."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(250)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@pytest.fixture
def deep(h: Harness) -> Harness:
    h.write_ok(h.dom0, DEEP, b"bottom")
    assert DEEP.count("/") == DEPTH
    return h


def test_deep_read_and_directory(deep: Harness, low_recursion_limit: None) -> None:
    h = deep
    assert h.read(h.dom0, DEEP) == b"bottom"
    assert h.directory(h.dom0, DEEP[:-2]) == ["a"]
    assert h.directory(h.dom0, DEEP) == []
    assert h.ok(h.dom0, Op.GET_PERMS, DEEP) == b"n0\0"


def test_deep_check(deep: Harness, low_recursion_limit: None) -> None:
    h = deep
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"
    assert h.consistent() == []


def test_deep_rm_fires_and_frees(deep: Harness, low_recursion_limit: None) -> None:
    h = deep
    h.watch(h.dom0, "/d", "top")
    h.watch(h.dom0, DEEP, "bottom")
    count = len(h.engine.tree.nodes)
    h.ok(h.dom0, Op.RM, "/d")
    assert sorted(h.events(h.dom0)) == [("/d", "top"), (DEEP, "bottom")]
    assert len(h.engine.tree.nodes) == count - DEPTH
    assert h.consistent() == []


def test_deep_transaction(deep: Harness, low_recursion_limit: None) -> None:
    h = deep
    tx = h.start(h.dom0)
    assert h.read(h.dom0, DEEP, tx=tx) == b"bottom"
    h.write_ok(h.dom0, DEEP + "/x", b"", tx=tx)
    h.ok(h.dom0, Op.RM, "/d/a", tx=tx)
    h.write_ok(h.dom0, "/d/a/b" + "/c" * 500, b"", tx=tx)
    assert h.end(h.dom0, tx) == "OK"
    assert h.err(h.dom0, Op.READ, DEEP) == "ENOENT"
    assert h.read(h.dom0, "/d/a/b" + "/c" * 500) == b""
    assert h.consistent() == []


def test_deep_guest_tree_released(h: Harness, low_recursion_limit: None) -> None:
    """Domain cleanup walks the whole tree iteratively too (spec 3.6)."""
    h.write_ok(h.dom0, "/local/domain/5")
    h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5", "n5")
    guest = h.introduce(5)
    h.set_quota(5, "path-max", 0)
    h.set_quota(5, "nodes", 0)
    h.write_ok(guest, "x" + "/y" * 999, b"")
    assert h.recount(5) == 1001
    h.ok(h.dom0, Op.RELEASE, "5")
    assert h.recount(5) == 0
    assert h.consistent() == []


# ----------------------------------------------------------------- accounting


def assert_accounting(h: Harness, *domids: int) -> None:
    for domid in domids:
        assert h.engine.tree.accounting.of(domid).nodes == h.recount(domid), domid
    assert h.consistent() == []
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"


def test_initial_tree_is_charged_to_priv(h: Harness) -> None:
    """Spec 2: /, /tool, /tool/xenstored and the two special nodes belong to priv."""
    assert h.engine.tree.accounting.of(0).nodes == 5 == h.recount(0)
    assert h.perms(h.dom0, "@introduceDomain") == ["n0"]
    assert h.perms(h.dom0, "/tool/xenstored") == ["n0"]
    assert_accounting(h, 0)


def test_accounting_after_subtree_rm(world: World) -> None:
    h = world.h
    for path in ("data/a/b/c", "data/a/d", "data/e"):
        h.write_ok(world.g5, path)
    h.write_ok(h.dom0, "/local/domain/5/data/a/by-dom0")
    assert_accounting(h, 0, 5)
    h.ok(world.g5, Op.RM, "data/a")
    assert_accounting(h, 0, 5)
    h.ok(h.dom0, Op.RM, "/local/domain/5")
    assert h.recount(5) == 0
    assert_accounting(h, 0, 5)


def test_accounting_after_ownership_changes(world: World) -> None:
    h = world.h
    h.write_ok(h.dom0, "/own/a/b")
    h.ok(h.dom0, Op.SET_PERMS, "/own/a", "n5")
    h.ok(h.dom0, Op.SET_PERMS, "/own/a/b", "n6")
    assert_accounting(h, 0, 5, 6)
    h.ok(h.dom0, Op.RM, "/own")
    assert_accounting(h, 0, 5, 6)


def test_accounting_after_transactions(world: World) -> None:
    h = world.h
    g5 = world.g5
    tx = h.start(g5)
    h.write_ok(g5, "data/x/y", b"", tx=tx)
    h.ok(g5, Op.RM, "data/x", tx=tx)
    h.write_ok(g5, "data/p/q", b"", tx=tx)
    h.ok(g5, Op.RM, "data/p/q", tx=tx)
    assert h.end(g5, tx) == "OK"
    assert_accounting(h, 0, 5)
    # An aborted one changes nothing.
    tx = h.start(g5)
    h.write_ok(g5, "data/never", b"", tx=tx)
    assert h.end(g5, tx, commit=False) == "OK"
    assert_accounting(h, 0, 5)


def test_check_repairs_broken_accounting(h: Harness) -> None:
    """Spec 1.6 check: accounting is recounted and repaired, problems logged."""
    from pyxenstored.effects import LogMessage

    h.engine.tree.accounting.of(0).nodes += 3
    h.engine.take_effects()
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"
    assert any(isinstance(e, LogMessage) for e in h.engine.take_effects())
    assert h.engine.tree.accounting.of(0).nodes == h.recount(0)
    assert h.consistent() == []
