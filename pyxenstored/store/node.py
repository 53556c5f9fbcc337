"""One node of the tree: value, permissions, ordered children, generation."""

from typing import Final

import attrs

from pyxenstored.store.permissions import Perms

#: C's ``struct node_hdr``: u64 generation, u16 num_perms, u16 datalen, u32 childlen.
NODE_HEADER_SIZE: Final = 16
#: ``struct xs_permissions``: two 32-bit fields.
PERM_SIZE: Final = 8
#: The generation of a node that does not exist (C ``NO_GENERATION``).
NO_GENERATION: Final = 2**64 - 1


@attrs.define(slots=True, eq=False)
class Node:
    """A node; ``children`` is an insertion-ordered set of child names.

    ``childlen`` caches the byte length of the NUL-separated child list
    (C ``hdr.childlen``) so that sizes and DIRECTORY_PART stay O(1).
    """

    value: bytes
    perms: Perms
    generation: int
    children: dict[str, None] = attrs.field(factory=dict)
    childlen: int = 0

    def copy(self) -> "Node":
        return Node(self.value, self.perms, self.generation, dict(self.children), self.childlen)

    def size(self) -> int:
        """The node-size quota's measure (spec 6.1)."""
        return NODE_HEADER_SIZE + PERM_SIZE * len(self.perms) + len(self.value) + self.childlen

    def child_list(self) -> bytes:
        """The DIRECTORY reply: each child name NUL-terminated."""
        return "".join(name + "\0" for name in self.children).encode("latin-1")

    def add_child(self, name: str) -> None:
        self.children[name] = None
        self.childlen += len(name) + 1

    def remove_child(self, name: str) -> None:
        if self.children.pop(name, 0) is None:
            self.childlen -= len(name) + 1


def footprint(path: str, node: Node) -> int:
    """Memory charged to a node's owner: its record plus its path (spec 6.1)."""
    return node.size() + len(path)
