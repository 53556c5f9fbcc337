"""A node's children: a tuple while few, a dict beyond ``SMALL_CHILDREN``,
one insertion-ordered set either way, with ``childlen`` kept exact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.store.node import SMALL_CHILDREN, Node, children_of
from pyxenstored.store.permissions import parse_perms

NAMES = st.sampled_from([f"n{i}" for i in range(2 * SMALL_CHILDREN + 3)])
STEPS = st.lists(st.tuples(st.booleans(), NAMES), max_size=60)


def fresh() -> Node:
    return Node(b"", parse_perms(["n0"]), 1)


@given(STEPS)
def test_children_behave_as_an_ordered_set(steps: list[tuple[bool, str]]) -> None:
    node = fresh()
    model: dict[str, None] = {}
    for add, name in steps:
        if add:
            node.add_child(name)
            model.setdefault(name, None)
        else:
            node.remove_child(name)
            model.pop(name, None)
        assert list(node.children) == list(model)
        assert node.childlen == sum(len(name) + 1 for name in model)
        assert node.child_list() == "".join(f"{name}\0" for name in model).encode()


def test_small_sets_are_tuples_and_large_ones_dicts() -> None:
    node = fresh()
    assert node.children == ()
    for i in range(SMALL_CHILDREN):
        node.add_child(f"c{i}")
    assert isinstance(node.children, tuple)
    node.add_child("more")
    assert isinstance(node.children, dict)
    assert list(node.children)[-1] == "more"


def test_a_copy_never_shares_a_mutable_set() -> None:
    node = fresh()
    for i in range(SMALL_CHILDREN + 1):
        node.add_child(f"c{i}")
    copy = node.copy()
    copy.add_child("only-in-copy")
    copy.remove_child("c0")
    assert list(node.children) == [f"c{i}" for i in range(SMALL_CHILDREN + 1)]
    assert node.childlen == sum(len(name) + 1 for name in node.children)


def test_loaded_children_take_the_same_forms() -> None:
    assert children_of([]) == ()
    assert children_of(["a", "b"]) == ("a", "b")
    many = [f"c{i}" for i in range(SMALL_CHILDREN + 1)]
    loaded = children_of(many)
    assert isinstance(loaded, dict) and list(loaded) == many


def test_names_are_shared_between_nodes() -> None:
    first, second = fresh(), fresh()
    first.add_child("".join(["sta", "te"]))
    second.add_child("".join(["st", "ate"]))
    assert first.children[0] is second.children[0]  # type: ignore[index]
