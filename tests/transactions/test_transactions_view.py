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


def commit(tx: TransactionView) -> list[tuple[str, int, object]]:
    """Apply ``tx`` and return the events it fired, with their filter permissions."""
    fired: list[tuple[str, int, object]] = []
    tx.apply(lambda path, mode, perms: fired.append((path, mode, perms)))
    return fired


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
    commit(tx)
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
    commit(tx)
    assert list(tree.get("/a").children) == ["b"]
    assert "/a/n" not in tree.nodes
    assert check_tree(tree) == []


def test_delete_committed_node(tree: Tree) -> None:
    tx = view(tree)
    tx.delete("/a/b")
    assert tx.get("/a/b") is None
    assert tx.pending_nodes(5) == -1
    assert tree.get("/a/b") is not None
    commit(tx)
    assert "/a/b" not in tree.nodes
    assert tree.accounting.of(5).nodes == 0
    assert check_tree(tree) == []


def test_apply_stamps_new_generations(tree: Tree) -> None:
    tx = view(tree)
    before = tree.generation
    tx.set_value("/a", b"x")
    commit(tx)
    assert tree.get("/a").generation > before


def test_set_perms_moves_pending_charge(tree: Tree) -> None:
    tx = view(tree)
    tx.set_perms("/a", FIVE)
    assert tx.pending_nodes(5) == 1
    assert tx.pending_nodes(0) == -1
    commit(tx)
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


def test_notify_subtree_wins(tree: Tree) -> None:
    """C ``queue_watches``: one event per node, SUBTREE winning, in notify order."""
    tx = view(tree)
    tx.notify("/a", EXACT, None, ROOT)
    tx.notify("/a", SUBTREE, None, FIVE)
    tx.notify("/a", EXACT, None, None)
    tx.notify("/b", SUBTREE, None, None)
    tx.notify("/b", EXACT, None, ROOT)
    assert tx.events == {"/a": SUBTREE, "/b": SUBTREE}
    assert list(tx.events) == ["/a", "/b"]


def test_apply_fires_each_node_after_installing_it(tree: Tree) -> None:
    """C ``finalize_transaction``: first-access order, each event right after its
    node is installed, filtered with the permissions of first access (none for
    a node that was missing then)."""
    tx = view(tree)
    tx.get("/a/b")
    tx.set_perms("/a", FIVE)
    tx.notify("/a", SUBTREE, None, None)
    tx.create("/a/new", b"", FIVE)
    tx.notify("/a/new", SUBTREE, None, None)
    tx.set_value("/a/b", b"x")
    tx.notify("/a/b", EXACT, None, None)
    seen: list[tuple[str, bytes | None]] = []

    def fire(path: str, mode: int, perms: object) -> None:
        installed = tree.get("/a/new")
        seen.append((path, installed.value if installed is not None else None))

    tx.apply(fire)
    assert [path for path, _ in seen] == ["/a/b", "/a", "/a/new"]
    # /a/new was not installed yet when /a/b and /a fired.
    assert [value for _, value in seen] == [None, None, b""]
    assert commit(view(tree)) == []


def test_apply_passes_permissions_of_first_access(tree: Tree) -> None:
    tx = view(tree)
    tx.set_perms("/a", FIVE)
    tx.notify("/a", SUBTREE, None, None)
    tx.create("/a/new", b"", FIVE)
    tx.notify("/a/new", SUBTREE, None, None)
    assert commit(tx) == [("/a", SUBTREE, ROOT), ("/a/new", SUBTREE, None)]


def test_node_deltas_track_touched_owners(tree: Tree) -> None:
    """C ``changed_domains``: an owner whose count went up and back stays listed."""
    tx = view(tree)
    tx.create("/a/n", b"", FIVE)
    tx.delete("/a/n")
    tx.set_value("/a", b"x")
    assert tx.node_deltas == {5: 0}
    assert tx.created_node


# ------------------------------------------------------------------ replay


def test_not_replayable_by_default(tree: Tree) -> None:
    """Views made outside the engine's TRANSACTION_START (a migration
    stream's, a test's) record nothing: a conflict is EAGAIN, as C."""
    tx = view(tree)
    tx.record(2, b"/a\0", b"A")
    assert tx.recording is None


def test_recording_stops_at_its_cap(tree: Tree) -> None:
    tx = TransactionView(tree, 1, recording=[], replay_limit=2)
    tx.record(2, b"/a\0", b"A")
    tx.record(2, b"/none\0", "ENOENT")
    assert tx.recording == [(2, b"/a\0", b"A"), (2, b"/none\0", "ENOENT")]
    tx.record(2, b"/a\0", b"A")  # one too many: no longer replayable, for good
    assert tx.recording is None
    tx.record(2, b"/a\0", b"A")
    assert tx.recording is None


def test_restarted_is_a_fresh_view_of_the_current_tree(tree: Tree) -> None:
    tx = TransactionView(tree, 7, 50, recording=[], replay_limit=10)
    tx.set_value("/a", b"mine")
    tx.record(11, b"/a\0mine", b"OK\0")
    tree.create("/a/c", b"", ROOT)  # changes /a: a conflict
    tree.set_value("/a/b", b"again")
    assert tx.conflicts()
    fresh = tx.restarted()
    assert (fresh.tx_id, fresh.node_limit, fresh.tree) == (7, 50, tree)
    assert fresh.accessed == {} and fresh.nodes == {} and fresh.dirty == {}
    assert fresh.recording is None  # it is committed at once, or dropped
    assert fresh.get("/a/b").value == b"again"
    assert fresh.conflicts() is False
    assert tx.get("/a").value == b"mine"  # the old view is untouched


def test_a_failed_transaction_stops_recording(tree: Tree) -> None:
    """Its commit is ENOMEM before any replay: nothing to keep."""
    tx = TransactionView(tree, 1, recording=[], replay_limit=10)
    tx.failed = True
    tx.record(11, b"/a\0x", "ENOSPC")
    assert tx.recording is None
