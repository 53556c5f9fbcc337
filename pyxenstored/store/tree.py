"""The committed tree and the view through which operations change it.

Operations (WRITE, MKDIR, RM, SET_PERMS) are written once against the
``NodeView`` protocol. ``Tree`` is the view for requests outside a
transaction: it changes nodes in place, stamps generations and charges
usage at once. ``transactions.TransactionView`` implements the same
protocol over a private overlay.
"""

from collections.abc import Iterator
from typing import Final, Protocol

import attrs

from pyxenstored.store.accounting import Accounting
from pyxenstored.store.node import Node, footprint
from pyxenstored.store.paths import basename, parent_of
from pyxenstored.store.permissions import Perms, owner

#: Kinds of entries in ``Tree.changes`` (see ``persist/image.py`` for replay).
CREATE: Final = 0
SET_VALUE: Final = 1
SET_PERMS: Final = 2
DELETE: Final = 3
REPLACE: Final = 4

#: ``(kind, generation before, path, *arguments)``.
Change = tuple[object, ...]


class NodeView(Protocol):
    """What an operation may do to nodes, in or out of a transaction."""

    def get(self, path: str) -> Node | None:
        """The node for reading; callers must not mutate it."""

    def create(self, path: str, value: bytes, perms: Perms) -> Node:
        """Add a childless node and link it into its (existing) parent."""

    def set_value(self, path: str, value: bytes) -> Node: ...

    def set_perms(self, path: str, perms: Perms) -> Node: ...

    def delete(self, path: str) -> None:
        """Remove a node whose children are already gone, unlinking it from its parent."""


@attrs.define(eq=False)
class Tree:
    """All committed nodes, keyed by canonical path (``@`` nodes included)."""

    nodes: dict[str, Node] = attrs.field(factory=dict)
    accounting: Accounting = attrs.field(factory=Accounting)
    #: Global counter, bumped by every change and every transaction start (spec 4.2).
    generation: int = 0
    #: When not None, every change is appended here for the journal: enough
    #: to redo it exactly through the same methods (the generation before it
    #: makes the redo stamp the same generations).
    changes: list[Change] | None = None

    def next_generation(self) -> int:
        self.generation += 1
        return self.generation

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def _charge(self, path: str, node: Node, sign: int) -> None:
        self.accounting.charge(owner(node.perms), sign, sign * footprint(path, node))

    def _resize(self, path: str, node: Node, before: int) -> None:
        self.accounting.charge(owner(node.perms), 0, footprint(path, node) - before)

    def create(self, path: str, value: bytes, perms: Perms) -> Node:
        if self.changes is not None:
            self.changes.append((CREATE, self.generation, path, value, perms))
        node = Node(value, perms, self.next_generation())
        self.nodes[path] = node
        self._charge(path, node, 1)
        if path[0] == "/" and path != "/":
            parent_path = parent_of(path)
            parent = self.nodes[parent_path]
            before = footprint(parent_path, parent)
            parent.add_child(basename(path))
            parent.generation = self.next_generation()
            self._resize(parent_path, parent, before)
        return node

    def set_value(self, path: str, value: bytes) -> Node:
        if self.changes is not None:
            self.changes.append((SET_VALUE, self.generation, path, value))
        node = self.nodes[path]
        # The footprint changes by the value's length alone (``footprint``).
        self.accounting.charge(owner(node.perms), 0, len(value) - len(node.value))
        node.value = value
        node.generation = self.next_generation()
        return node

    def set_perms(self, path: str, perms: Perms) -> Node:
        if self.changes is not None:
            self.changes.append((SET_PERMS, self.generation, path, perms))
        node = self.nodes[path]
        self._charge(path, node, -1)
        node.perms = perms
        node.generation = self.next_generation()
        self._charge(path, node, 1)
        return node

    def delete(self, path: str) -> None:
        if self.changes is not None:
            self.changes.append((DELETE, self.generation, path))
        node = self.nodes.pop(path)
        self._charge(path, node, -1)
        if path[0] == "/":
            parent_path = parent_of(path)
            parent = self.nodes[parent_path]
            before = footprint(parent_path, parent)
            parent.remove_child(basename(path))
            parent.generation = self.next_generation()
            self._resize(parent_path, parent, before)

    def replace(self, path: str, node: Node | None) -> None:
        """Install a transaction's final version of a node (or its removal).

        Parents' child lists arrive as their own entries, so this only swaps
        the record and moves the usage; the caller stamps the generation.
        """
        if self.changes is not None:
            self.changes.append((REPLACE, self.generation, path, node and node.copy()))
        old = self.nodes.pop(path, None)
        if old is not None:
            self._charge(path, old, -1)
        if node is not None:
            self.nodes[path] = node
            self._charge(path, node, 1)

    def walk(self, path: str) -> Iterator[tuple[str, Node]]:
        """Pre-order walk of a subtree with an explicit stack (XSA-418: no recursion)."""
        stack = [path]
        while stack:
            current = stack.pop()
            node = self.nodes.get(current)
            if node is None:
                continue
            yield current, node
            prefix = current if current != "/" else ""
            stack.extend(f"{prefix}/{name}" for name in reversed(node.children))
