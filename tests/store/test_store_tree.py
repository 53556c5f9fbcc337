"""store.tree, store.node, store.accounting and store.consistency (spec 1.6 check, 4.2, 6.1)."""

import sys

from pyxenstored.store.consistency import check_tree
from pyxenstored.store.node import NODE_HEADER_SIZE, PERM_SIZE, Node, footprint
from pyxenstored.store.permissions import Perm, parse_perms
from pyxenstored.store.tree import Tree

ROOT = (Perm(0, 0),)


def make_tree(*paths: str, perms=ROOT) -> Tree:
    tree = Tree()
    tree.create("/", b"", ROOT)
    for path in paths:
        tree.create(path, b"", perms)
    return tree


def test_create_links_child_and_charges_owner() -> None:
    tree = make_tree()
    five = parse_perms(["n5"])
    tree.create("/a", b"xyz", five)
    assert list(tree.get("/").children) == ["a"]
    assert tree.get("/").childlen == 2
    assert tree.accounting.of(5).nodes == 1
    assert tree.accounting.of(5).memory == footprint("/a", tree.get("/a"))
    assert check_tree(tree) == []


def test_generations_increase_on_every_change() -> None:
    tree = make_tree("/a")
    root_gen = tree.get("/").generation
    node_gen = tree.get("/a").generation
    tree.set_value("/a", b"v")
    assert tree.get("/a").generation > node_gen
    tree.create("/a/b", b"", ROOT)
    assert tree.get("/a").generation > node_gen
    assert tree.get("/").generation == root_gen
    before = tree.get("/a").generation
    tree.set_perms("/a", parse_perms(["r0"]))
    assert tree.get("/a").generation > before


def test_delete_unlinks_and_uncharges() -> None:
    tree = make_tree("/a", "/a/b")
    tree.delete("/a/b")
    assert list(tree.get("/a").children) == []
    assert tree.get("/a").childlen == 0
    tree.delete("/a")
    assert tree.accounting.of(0).nodes == 1
    assert check_tree(tree) == []


def test_set_perms_moves_the_charge() -> None:
    tree = make_tree("/a")
    tree.set_perms("/a", parse_perms(["n7", "r0"]))
    assert tree.accounting.of(7).nodes == 1
    assert tree.accounting.of(0).nodes == 1
    assert check_tree(tree) == []


def test_node_size_and_child_list() -> None:
    node = Node(b"12345", parse_perms(["n0", "r1"]), 0)
    node.add_child("ab")
    node.add_child("c")
    assert node.child_list() == b"ab\0c\0"
    assert node.size() == NODE_HEADER_SIZE + 2 * PERM_SIZE + 5 + 5
    node.remove_child("ab")
    node.remove_child("missing")  # no effect, no error
    assert node.childlen == 2
    copy = node.copy()
    copy.add_child("z")
    assert list(node.children) == ["c"]


def test_walk_is_preorder_in_creation_order() -> None:
    tree = make_tree("/b", "/a", "/b/y", "/b/x", "/a/z")
    assert [path for path, _ in tree.walk("/")] == ["/", "/b", "/b/y", "/b/x", "/a", "/a/z"]
    assert [path for path, _ in tree.walk("/missing")] == []


def test_walk_deep_without_recursion() -> None:
    tree = make_tree()
    path = ""
    for _ in range(3000):
        path += "/n"
        tree.create(path, b"", ROOT)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        assert sum(1 for _ in tree.walk("/")) == 3001
        assert check_tree(tree) == []
    finally:
        sys.setrecursionlimit(old)


def test_replace_moves_usage() -> None:
    tree = make_tree("/a")
    new = Node(b"new", parse_perms(["n3"]), 0)
    tree.replace("/a", new)
    assert tree.accounting.of(3).nodes == 1
    assert tree.accounting.of(0).nodes == 1
    tree.replace("/a", None)
    assert tree.accounting.of(3).nodes == 0


def test_check_tree_reports_and_repairs() -> None:
    tree = make_tree("/a", "/a/b")
    # A dangling child entry, an orphan, and wrong accounting.
    tree.get("/").add_child("ghost")
    tree.nodes["/lost/child"] = Node(b"", ROOT, 0)
    tree.accounting.of(0).nodes += 5
    problems = check_tree(tree)
    assert any("ghost" in problem for problem in problems)
    assert any("/lost/child" in problem for problem in problems)
    assert any("domain 0" in problem for problem in problems)
    # Accounting is repaired to the recount; link problems stay reported.
    assert tree.accounting.of(0).nodes == len(tree.nodes)
    assert not any("domain 0" in problem for problem in check_tree(tree))


def test_accounting_forget() -> None:
    tree = make_tree("/a", perms=parse_perms(["n4"]))
    assert tree.accounting.of(4).nodes == 1
    tree.accounting.forget(4)
    tree.accounting.forget(99)
    assert 4 not in tree.accounting.usage
