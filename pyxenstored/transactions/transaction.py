"""A transaction: C xenstored's model (spec 4.2).

The first access to a node records its committed generation (or that it
was missing); later accesses see the transaction's private copy. Nodes
never touched are read live, so this is read-set validation, not snapshot
isolation. At commit every recorded generation must still hold, else
EAGAIN; then the private copies replace the committed nodes.
"""

from typing import Final

import attrs

from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.store.node import NO_GENERATION, Node, footprint
from pyxenstored.store.paths import basename, parent_of
from pyxenstored.store.permissions import Perms, owner
from pyxenstored.store.tree import Tree

EXACT: Final = 0
SUBTREE: Final = 1


@attrs.define(eq=False)
class TransactionView:
    """One open transaction of one connection; a ``NodeView``."""

    tree: Tree
    tx_id: int
    #: transaction-nodes quota for the owning connection (0 = unlimited).
    node_limit: int = 0
    #: Committed generation at first access, in first-access order.
    accessed: dict[str, int] = attrs.field(factory=dict)
    #: The transaction's private copy of every node it touched (None: missing).
    nodes: dict[str, Node | None] = attrs.field(factory=dict)
    #: Paths the transaction changed, in order; applied at commit.
    dirty: dict[str, None] = attrs.field(factory=dict)
    #: Watch events to fire on commit: path -> (mode, permissions before the transaction).
    events: dict[str, tuple[int, Perms | None]] = attrs.field(factory=dict)
    #: Node count and memory deltas per owner, for the quota check at commit.
    deltas: dict[int, list[int]] = attrs.field(factory=dict)
    #: Set when a write failed part-way; the commit then answers ENOMEM (spec 4.1).
    failed: bool = False

    def get(self, path: str) -> Node | None:
        """The private copy, made at first access so later reads are repeatable."""
        nodes = self.nodes
        if path in nodes:
            return nodes[path]
        # C ``access_node``: refused once the new count would reach the quota (spec 6.1).
        if self.node_limit and len(self.accessed) + 1 >= self.node_limit:
            self.failed = True
            raise XenstoreError("ENOSPC")
        committed = self.tree.nodes.get(path)
        if committed is None:
            self.accessed[path] = NO_GENERATION
            nodes[path] = None
            return None
        self.accessed[path] = committed.generation
        copy = nodes[path] = committed.copy()
        return copy

    def _private(self, path: str) -> Node:
        """The copy the transaction may change, marked for commit."""
        node = self.get(path)
        assert node is not None
        self.dirty[path] = None
        return node

    def _charge(self, domid: int, nodes: int, memory: int) -> None:
        delta = self.deltas.setdefault(domid, [0, 0])
        delta[0] += nodes
        delta[1] += memory

    def pending_nodes(self, domid: int) -> int:
        delta = self.deltas.get(domid)
        return delta[0] if delta else 0

    def _relink(self, path: str, name: str, add: bool) -> None:
        parent_path = parent_of(path)
        parent = self._private(parent_path)
        before = footprint(parent_path, parent)
        if add:
            parent.add_child(name)
        else:
            parent.remove_child(name)
        self._charge(owner(parent.perms), 0, footprint(parent_path, parent) - before)

    def create(self, path: str, value: bytes, perms: Perms) -> Node:
        self.get(path)
        node = Node(value, perms, NO_GENERATION)
        self.nodes[path] = node
        self.dirty[path] = None
        self._charge(owner(perms), 1, footprint(path, node))
        if path[0] == "/" and path != "/":
            self._relink(path, basename(path), add=True)
        return node

    def set_value(self, path: str, value: bytes) -> Node:
        node = self._private(path)
        before = footprint(path, node)
        node.value = value
        self._charge(owner(node.perms), 0, footprint(path, node) - before)
        return node

    def set_perms(self, path: str, perms: Perms) -> Node:
        node = self._private(path)
        self._charge(owner(node.perms), -1, -footprint(path, node))
        node.perms = perms
        self._charge(owner(perms), 1, footprint(path, node))
        return node

    def delete(self, path: str) -> None:
        node = self.get(path)
        assert node is not None
        self._charge(owner(node.perms), -1, -footprint(path, node))
        self.nodes[path] = None
        self.dirty[path] = None
        if path[0] == "/":
            self._relink(path, basename(path), add=False)

    def queue_event(self, path: str, mode: int, old_perms: Perms | None) -> None:
        """Remember an event for commit; SUBTREE wins over EXACT (spec 4.2)."""
        previous = self.events.get(path)
        if previous is None:
            self.events[path] = (mode, old_perms)
        elif mode == SUBTREE and previous[0] != SUBTREE:
            self.events[path] = (SUBTREE, previous[1])

    def notify(self, path: str, mode: int, node: Node | None, old_perms: Perms | None) -> None:
        """The ``Notify`` hook of operations: keep the permissions watchers saw before."""
        self.queue_event(path, mode, old_perms if old_perms is not None else (
            node.perms if node is not None else None))

    def conflicts(self) -> bool:
        """True when any node read or written has changed since first access."""
        nodes = self.tree.nodes
        for path, generation in self.accessed.items():
            current = nodes.get(path)
            if (NO_GENERATION if current is None else current.generation) != generation:
                return True
        return False

    def apply(self) -> None:
        """Install the private copies into the committed tree (after validation)."""
        tree = self.tree
        for path in self.dirty:
            node = self.nodes[path]
            if node is not None:
                node.generation = tree.next_generation()
            tree.replace(path, node)
