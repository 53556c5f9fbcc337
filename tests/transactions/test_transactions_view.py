"""TransactionView: first-access generations, conflicts, apply (spec 4.2, XSA-421)."""

import pytest

from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.store.consistency import check_tree
from pyxenstored.store.node import NO_GENERATION
from pyxenstored.store.permissions import Perm, parse_perms
from pyxenstored.store.tree import Tree
from pyxenstored.transactions import EXACT, SUBTREE, TransactionView

ROOT = (Perm(0, 0),)
FIVE = parse_perms(["n5"])


@pytest.fixture
def tree() -> Tree:
    tree = Tree()
    tree.create("/", b"", ROOT)
    tree.create("/a", b"A", ROOT)
    tree.create("/a/b", b"B", FIVE)
    return tree


def view(tree: Tree, limit: int = 0) -> TransactionView:
    tree.next_generation()
    return TransactionView(tree, 1, limit)


def test_first_access_records_generation(tree: Tree) -> None:
    tx = view(tree)
    assert tx.get("/a").value == b"A"
    assert tx.get("/missing") is None
    assert tx.accessed == {"/a": tree.get("/a").generation, "/missing": NO_GENERATION}


def test_writes_are_private_until_apply(tree: Tree) -> None:
    tx = view(tree)
    tx.set_value("/a", b"new")
    tx.create("/a/c", b"C", FIVE)
    assert tx.get("/a").value == b"new"
    assert list(tx.get("/a").children) == ["b", "c"]
    assert tree.get("/a").value == b"A"
    assert "/a/c" not in tree.nodes
    assert tx.pending_nodes(5) == 1
    assert not tx.conflicts()
    tx.apply()
    assert tree.get("/a").value == b"new"
    assert tree.get("/a/c").value == b"C"
    assert check_tree(tree) == []
    assert tree.accounting.of(5).nodes == 2


@pytest.mark.parametrize(
    ("inside", "outside", "conflict"),
    [
        pytest.param("read /a", "set_value /a", True, id="4.2:read-then-written"),
        pytest.param("read /a/x", "create /a/x", True, id="4.2:missing-then-created"),
        pytest.param("create /a/x", "create /a/y", True, id="4.2:siblings"),
        pytest.param("read /a/b", "delete /a/b", True, id="4.2:read-then-deleted"),
        pytest.param("read /a/b", "set_value /a", False, id="4.2:parent-only-changed"),
        pytest.param("read /a", "create /z", False, id="4.2:unrelated"),
        pytest.param("set_value /a/b", "set_perms /a/b", True, id="4.2:written-then-perms"),
    ],
)
def test_conflicts(tree: Tree, inside: str, outside: str, conflict: bool) -> None:
    tx = view(tree)
    action, path = inside.split()
    if action == "read":
        tx.get(path)
    elif action == "create":
        tx.create(path, b"", ROOT)
    else:
        tx.set_value(path, b"tx")
    action, path = outside.split()
    if action == "create":
        tree.create(path, b"", ROOT)
    elif action == "delete":
        tree.delete(path)
    elif action == "set_perms":
        tree.set_perms(path, ROOT)
    else:
        tree.set_value(path, b"outside")
    assert tx.conflicts() is conflict


def test_create_then_delete_leaves_no_trace(tree: Tree) -> None:
    """XSA-421: nothing is charged and the parent's child list is unchanged."""
    tx = view(tree)
    tx.create("/a/n", b"", FIVE)
    tx.create("/a/n/m", b"", FIVE)
    tx.delete("/a/n/m")
    tx.delete("/a/n")
    assert tx.pending_nodes(5) == 0
    tx.apply()
    assert list(tree.get("/a").children) == ["b"]
    assert "/a/n" not in tree.nodes
    assert check_tree(tree) == []


def test_delete_committed_node(tree: Tree) -> None:
    tx = view(tree)
    tx.delete("/a/b")
    assert tx.get("/a/b") is None
    assert tx.pending_nodes(5) == -1
    assert tree.get("/a/b") is not None
    tx.apply()
    assert "/a/b" not in tree.nodes
    assert tree.accounting.of(5).nodes == 0
    assert check_tree(tree) == []


def test_apply_stamps_new_generations(tree: Tree) -> None:
    tx = view(tree)
    before = tree.generation
    tx.set_value("/a", b"x")
    tx.apply()
    assert tree.get("/a").generation > before


def test_set_perms_moves_pending_charge(tree: Tree) -> None:
    tx = view(tree)
    tx.set_perms("/a", FIVE)
    assert tx.pending_nodes(5) == 1
    assert tx.pending_nodes(0) == -1
    tx.apply()
    assert tree.accounting.of(5).nodes == 2
    assert check_tree(tree) == []


@pytest.mark.parametrize(
    ("limit", "allowed"),
    [
        pytest.param(0, 50, id="6.1:unlimited"),
        pytest.param(1, 0, id="6.1:quota-1-allows-none"),
        pytest.param(2, 1, id="6.1:quota-2-allows-one"),
        pytest.param(5, 4, id="6.1:quota-n-allows-n-minus-1"),
    ],
)
def test_transaction_nodes_limit(tree: Tree, limit: int, allowed: int) -> None:
    """Spec 6.1 transaction-nodes: refused when the count would reach the quota (C
    ``access_node``); the transaction is then failed."""
    tx = view(tree, limit)
    for index in range(min(allowed, 50)):
        tx.get(f"/n{index}")
    assert not tx.failed
    if limit:
        with pytest.raises(XenstoreError) as info:
            tx.get("/one-more")
        assert info.value.name == "ENOSPC"
        assert tx.failed
        # Already-accessed nodes stay readable.
        if allowed:
            tx.get("/n0")


def test_queue_event_subtree_wins(tree: Tree) -> None:
    tx = view(tree)
    tx.queue_event("/a", EXACT, ROOT)
    tx.queue_event("/a", SUBTREE, FIVE)
    tx.queue_event("/a", EXACT, None)
    tx.queue_event("/b", SUBTREE, None)
    tx.queue_event("/b", EXACT, ROOT)
    # First-queued permissions are kept; order is first-notification order.
    assert tx.events == {"/a": (SUBTREE, ROOT), "/b": (SUBTREE, None)}
    assert list(tx.events) == ["/a", "/b"]


def test_notify_records_old_permissions(tree: Tree) -> None:
    tx = view(tree)
    node = tx.set_perms("/a", FIVE)
    tx.notify("/a", SUBTREE, node, ROOT)
    tx.notify("/a/new", SUBTREE, tx.create("/a/new", b"", FIVE), None)
    assert tx.events == {"/a": (SUBTREE, ROOT), "/a/new": (SUBTREE, FIVE)}
