"""One node of the tree: value, permissions, ordered children, generation."""

import sys
from collections.abc import Iterable
from typing import Final

import attrs

from pyxenstored.store.permissions import Perms

#: C's ``struct node_hdr``: u64 generation, u16 num_perms, u16 datalen, u32 childlen.
NODE_HEADER_SIZE: Final = 16
#: ``struct xs_permissions``: two 32-bit fields.
PERM_SIZE: Final = 8
#: The generation of a node that does not exist (C ``NO_GENERATION``).
NO_GENERATION: Final = 2**64 - 1
#: Children up to this many are kept in a tuple, beyond in a dict. Most
#: nodes have none or a few: a tuple of three names takes 64 bytes, a dict
#: of one 200, and the tuple's linear search is as fast at this size.
SMALL_CHILDREN: Final = 8
#: An insertion-ordered set of child names.
Children = tuple[str, ...] | dict[str, None]


@attrs.define(slots=True, eq=False)
class Node:
    """A node; ``children`` is an insertion-ordered set of child names.

    ``childlen`` caches the byte length of the NUL-separated child list
    (C ``hdr.childlen``) so that sizes and DIRECTORY_PART stay O(1).
    """

    value: bytes
    perms: Perms
    generation: int
    children: Children = ()
    childlen: int = 0

    def copy(self) -> "Node":
        children = self.children
        if type(children) is dict:
            children = dict(children)
        return Node(self.value, self.perms, self.generation, children, self.childlen)

    def size(self) -> int:
        """The node-size quota's measure (spec 6.1)."""
        return NODE_HEADER_SIZE + PERM_SIZE * len(self.perms) + len(self.value) + self.childlen

    def child_list(self) -> bytes:
        """The DIRECTORY reply: each child name NUL-terminated."""
        return "".join(name + "\0" for name in self.children).encode("latin-1")

    def add_child(self, name: str) -> None:
        children = self.children
        if name in children:
            return
        # Names repeat across the tree (``state``, ``backend``, device
        # numbers): one string each, not one per node.
        name = sys.intern(name)
        if type(children) is dict:
            children[name] = None
        elif len(children) < SMALL_CHILDREN:
            self.children = (*children, name)
        else:
            self.children = dict.fromkeys((*children, name))
        self.childlen += len(name) + 1

    def remove_child(self, name: str) -> None:
        children = self.children
        if name not in children:
            return
        if type(children) is dict:
            del children[name]
        else:
            self.children = tuple(child for child in children if child != name)
        self.childlen -= len(name) + 1


def children_of(names: Iterable[str]) -> Children:
    """A loaded node's children, kept and interned as ``add_child`` keeps them."""
    children = tuple(map(sys.intern, names))
    return children if len(children) <= SMALL_CHILDREN else dict.fromkeys(children)


def footprint(path: str, node: Node) -> int:
    """Memory charged to a node's owner: its record plus its path (spec 6.1)."""
    return node.size() + len(path)
