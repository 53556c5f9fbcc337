"""A transaction: C xenstored's model (spec 4.2).

The first access to a node records its committed generation (or that it
was missing); later accesses see the transaction's private copy. Nodes
never touched are read live, so this is read-set validation, not snapshot
isolation. At commit every recorded generation must still hold, else
EAGAIN; then the private copies replace the committed nodes.

Unlike C, a conflicting transaction may still commit: the view records the
node requests it ran with their replies, and the engine replays them on a
fresh view of the current tree (oxenstored's replay, spec 4.3); see
``TransactionView.recording``.
"""

from collections.abc import Callable
from typing import Final

import attrs

from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.store.node import NO_GENERATION, Node
from pyxenstored.store.paths import basename, parent_of
from pyxenstored.store.permissions import Perms, owner
from pyxenstored.store.tree import Tree

EXACT: Final = 0
SUBTREE: Final = 1

#: One recorded request: ``(op, payload, reply)``, the reply being the payload
#: the client got (bytes) or the error name it got (str).
Record = tuple[int, bytes, bytes | str]


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
    #: Watch events to fire on commit: path -> EXACT or SUBTREE.
    events: dict[str, int] = attrs.field(factory=dict)
    #: Node count change per owner whose count was touched, even back to zero:
    #: C's ``changed_domains``, checked at commit (spec 6.1).
    node_deltas: dict[int, int] = attrs.field(factory=dict)
    #: Whether any node was created; C checks quotas at commit only then.
    created_node: bool = False
    #: Set when a write failed part-way; the commit then answers ENOMEM (spec 4.1).
    failed: bool = False
    #: The node requests run in the transaction, in order, with their replies,
    #: so that a conflicting commit can replay them on the current tree (the
    #: engine's ``_replayed``). Conflict detection alone cannot tell a harmful
    #: change from a harmless one (a sibling added under a parent this
    #: transaction also adds to); the replies can. None: not replayable
    #: (replay off, past ``replay_limit``, restored from a migration stream).
    recording: list[Record] | None = None
    #: How many requests ``recording`` may hold (``Config.replay_max_requests``).
    replay_limit: int = 0

    def record(self, op: int, payload: bytes, reply: bytes | str) -> None:
        """Note one request and its reply. Past the cap the transaction just
        stops being replayable (C's EAGAIN on conflict); nothing is refused.
        A failed transaction commits as ENOMEM before any replay: its
        recording is dropped too.

        Memory: at most ``replay_limit`` requests, each a packet payload and
        a reply of at most PAYLOAD_MAX bytes (a READ's reply is the node's
        own value, shared).
        """
        recording = self.recording
        if recording is not None:
            if len(recording) < self.replay_limit and not self.failed:
                recording.append((op, payload, reply))
            else:
                self.recording = None

    def restarted(self) -> "TransactionView":
        """The same transaction begun afresh on the current tree, to replay into.

        It records nothing: it is committed at once or dropped.
        """
        return TransactionView(self.tree, self.tx_id, self.node_limit)

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

    def _count(self, domid: int, nodes: int) -> None:
        self.node_deltas[domid] = self.node_deltas.get(domid, 0) + nodes

    def pending_nodes(self, domid: int) -> int:
        return self.node_deltas.get(domid, 0)

    def _relink(self, path: str, name: str, add: bool) -> None:
        parent = self._private(parent_of(path))
        if add:
            parent.add_child(name)
        else:
            parent.remove_child(name)

    def create(self, path: str, value: bytes, perms: Perms) -> Node:
        self.get(path)
        node = Node(value, perms, NO_GENERATION)
        self.nodes[path] = node
        self.dirty[path] = None
        self.created_node = True
        self._count(owner(perms), 1)
        if path[0] == "/" and path != "/":
            self._relink(path, basename(path), add=True)
        return node

    def set_value(self, path: str, value: bytes) -> Node:
        node = self._private(path)
        node.value = value
        return node

    def set_perms(self, path: str, perms: Perms) -> Node:
        node = self._private(path)
        self._count(owner(node.perms), -1)
        node.perms = perms
        self._count(owner(perms), 1)
        return node

    def delete(self, path: str) -> None:
        node = self.get(path)
        assert node is not None
        self._count(owner(node.perms), -1)
        self.nodes[path] = None
        self.dirty[path] = None
        if path[0] == "/":
            self._relink(path, basename(path), add=False)

    def notify(self, path: str, mode: int, node: Node | None, old_perms: Perms | None) -> None:
        """The ``Notify`` hook of operations: queue the event for commit, SUBTREE
        winning over EXACT (C ``queue_watches``). The node and permissions of
        the moment do not matter: the commit filters with those of first access."""
        if self.events.get(path) != SUBTREE:
            self.events[path] = mode

    def conflicts(self) -> bool:
        """True when any node read or written has changed since first access."""
        nodes = self.tree.nodes
        for path, generation in self.accessed.items():
            current = nodes.get(path)
            if (NO_GENERATION if current is None else current.generation) != generation:
                return True
        return False

    def apply(self, fire: Callable[[str, int, Perms | None], None]) -> None:
        """Install the private copies into the committed tree (after validation).

        C ``finalize_transaction`` walks the nodes in first-access order and
        fires each one's queued event right after installing it, so a
        watcher's permission check sees the tree half-applied (spec 5.2, 5.4).
        The filter also gets the permissions of first access (C saves them in
        ``access_node``); validation proved the committed node is still that
        one, and a node that was missing then has none.
        """
        tree, nodes, dirty, events = self.tree, self.nodes, self.dirty, self.events
        for path in self.accessed:
            committed = tree.nodes.get(path)
            if path in dirty:
                node = nodes[path]
                if node is not None:
                    node.generation = tree.next_generation()
                tree.replace(path, node)
            mode = events.get(path)
            if mode is not None:
                fire(path, mode, committed.perms if committed is not None else None)
