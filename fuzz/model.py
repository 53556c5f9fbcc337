"""A deliberately simple reference model of xenstore (C xenstored semantics).

It is the oracle of ``tests/fuzz/test_fuzz_stateful.py``: the engine and this
model get the same requests and must produce the same output bytes on every
connection (replies, watch events, their order) and the same tree.

Clarity over speed: the store is a dict ``path -> MNode`` and everything is
recomputed by walking it. Every rule cites the spec section (and C function,
``/tmp/xs/*.c``) it comes from. Scope: READ, WRITE, MKDIR, RM, DIRECTORY,
GET_PERMS, SET_PERMS, WATCH, UNWATCH, TRANSACTION_START/END, for well-formed
payloads over valid paths (``@`` paths included). Not modelled: memory and
node-size quotas, path-max, stale ACL entries (XSA-322), domain lifecycle,
special ``@`` watch events, slow-reader bounds.

Where C's own code is quirkier than the spec's intent, the model follows the
spec's reading and says so (``C QUIRK`` comments).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

# ------------------------------------------------------------------ constants

READ, WRITE, OWNER = 1, 2, 8
ALL = READ | WRITE | OWNER
DOMID_ANY = 0x7FF5
#: Perms as (flags, domid) pairs; entry 0 is the owner and "everyone else".
Perm = tuple[int, int]
Perms = tuple[Perm, ...]

OP_DIRECTORY, OP_READ, OP_GET_PERMS, OP_WATCH, OP_UNWATCH = 1, 2, 3, 4, 5
OP_TX_START, OP_TX_END, OP_WRITE, OP_MKDIR, OP_RM, OP_SET_PERMS = 6, 7, 11, 12, 13, 14
OP_WATCH_EVENT, OP_ERROR = 15, 16
EXACT, SUBTREE = 0, 1
OK = b"OK\0"

_LETTERS = {"n": 0, "r": READ, "w": WRITE, "b": READ | WRITE}
_NAMES = {0: "n", READ: "r", WRITE: "w", READ | WRITE: "b"}

#: C quota defaults (spec 6.1); 0 = unlimited.
DEFAULT_QUOTAS = {"nodes": 1000, "watches": 128, "transactions": 10, "node-permissions": 5}


class Refused(Exception):
    """An error reply: ``ERROR "<name>\\0"`` (spec 1.4)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_perm(text: str) -> Perm:
    return (_LETTERS[text[0]], int(text[1:], 0))


def format_perms(perms: Perms) -> bytes:
    return "".join(f"{_NAMES[flags]}{domid}\0" for flags, domid in perms).encode()


def parent_of(path: str) -> str:
    """C ``get_parent``: ``/`` for top-level nodes, ``/`` itself and ``@`` names."""
    slash = path.rfind("/")
    return path[:slash] if slash > 0 else "/"


def child_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def is_child(event: str, watched: str, depth: int) -> bool:
    """C ``is_child``: ``event`` is ``watched`` or below it, at most ``depth`` levels
    (depth < 0: any). ``/`` is the ancestor of every absolute path, not of ``@`` ones."""
    if watched == "/":
        if not event.startswith("/"):
            return False
        levels = 0 if event == "/" else event.count("/")
    elif event == watched:
        levels = 0
    elif event.startswith(watched + "/"):
        levels = event[len(watched) :].count("/")
    else:
        return False
    return depth < 0 or levels <= depth


# ----------------------------------------------------------------------- data


@dataclass
class MNode:
    value: bytes
    perms: Perms
    #: Child names in creation order (DIRECTORY order, spec 1.5).
    children: list[str] = field(default_factory=list)
    #: Model stamp of the last change; only compared for equality (conflicts).
    version: int = 0


@dataclass
class MWatch:
    path: str  # canonical
    token: str
    depth: int  # -1: unlimited
    prefix_len: int  # characters stripped from event paths (relative watch)


@dataclass
class Access:
    """A transaction's record of one node (C ``struct accessed_node``, spec 4.2)."""

    #: Version at first access; None: the node was missing.
    orig_version: int | None
    #: Permissions at first access (watch filter at commit, spec 5.5); None if missing.
    orig_perms: Perms | None
    #: The private copy (None: missing or deleted in the transaction).
    node: MNode | None
    modified: bool = False
    #: Watch event queued for commit: None, EXACT or SUBTREE (SUBTREE wins).
    fire: int | None = None


@dataclass
class MTx:
    accessed: dict[str, Access] = field(default_factory=dict)  # first-access order
    failed: bool = False
    #: C ``node_created``: a node creation was attempted (enables the commit quota check).
    node_created: bool = False
    #: Net node-count change per owner (C ``changed_domains``), in first-change order.
    delta: dict[int, int] = field(default_factory=dict)


@dataclass
class MConn:
    domid: int
    privileged: bool
    watches: list[MWatch] = field(default_factory=list)  # registration order
    txs: dict[int, MTx] = field(default_factory=dict)
    next_tx: int = 1
    #: Messages queued and not yet taken: (type, req_id, tx_id, payload).
    out: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    #: Payloads of queued events that later identical events collapse into.
    pending: list[bytes] = field(default_factory=list)


# ---------------------------------------------------------------------- views


class Model:
    """The whole store and every connection, with C xenstored's semantics."""

    def __init__(self, priv_domid: int = 0) -> None:
        self.version = 0
        private: Perms = ((0, priv_domid),)
        # C's cold-start tree (spec 2), including the special nodes.
        self.nodes: dict[str, MNode] = {
            "/": MNode(b"", private, ["tool"]),
            "/tool": MNode(b"", private, ["xenstored"]),
            "/tool/xenstored": MNode(b"", private),
            "@introduceDomain": MNode(b"", private),
            "@releaseDomain": MNode(b"", ((0, priv_domid), (READ, DOMID_ANY))),
        }
        self.conns: dict[int, MConn] = {}
        self.quotas: dict[int, dict[str, int]] = {}

    # -------------------------------------------------------------- set-up

    def add_connection(self, key: int, domid: int, privileged: bool) -> None:
        """``key`` is the engine's connection id; creation order = delivery order."""
        self.conns[key] = MConn(domid, privileged)

    def set_quota(self, domid: int, name: str, value: int) -> None:
        self.quotas.setdefault(domid, dict(DEFAULT_QUOTAS))[name] = value

    def quota(self, conn: MConn, name: str) -> int:
        if conn.privileged:
            return 0
        return self.quotas.get(conn.domid, DEFAULT_QUOTAS)[name]

    def take(self, key: int) -> list[tuple[int, int, int, bytes]]:
        conn = self.conns[key]
        out, conn.out = conn.out, []
        conn.pending = []
        return out

    def count_owned(self, domid: int) -> int:
        return sum(1 for node in self.nodes.values() if node.perms[0][1] == domid)

    def _stamp(self) -> int:
        self.version += 1
        return self.version

    # ----------------------------------------------------- access decision

    @staticmethod
    def perm_for(conn: MConn, perms: Perms) -> int:
        """C ``perm_for_conn`` (spec 3.2): priv all; owner all; first ACL match; else entry 0."""
        if conn.privileged:
            return ALL
        owner_flags, owner = perms[0]
        if owner in (conn.domid, DOMID_ANY):
            return ALL
        for flags, domid in perms[1:]:
            if domid in (conn.domid, DOMID_ANY):
                return flags
        return owner_flags

    # ------------------------------------------------- node access (C get/put)

    def _get(self, tx: MTx | None, path: str) -> MNode | None:
        """Read a node; in a transaction the first access records it (spec 4.2)."""
        if tx is None:
            return self.nodes.get(path)
        access = tx.accessed.get(path)
        if access is None:
            live = self.nodes.get(path)
            access = Access(
                None if live is None else live.version,
                None if live is None else live.perms,
                copy.deepcopy(live),
            )
            tx.accessed[path] = access
        return access.node

    def _put(self, tx: MTx | None, path: str, node: MNode | None) -> None:
        """Write (or, with None, delete) a node that was read before."""
        if tx is None:
            if node is None:
                del self.nodes[path]
            else:
                node.version = self._stamp()
                self.nodes[path] = node
            return
        access = tx.accessed[path]
        access.node = node
        access.modified = True

    def _charge(self, tx: MTx | None, owner: int, nodes: int) -> None:
        if tx is not None:
            tx.delta[owner] = tx.delta.get(owner, 0) + nodes

    # ------------------------------------------------------------- errors

    def _errno_from_parents(
        self, conn: MConn, tx: MTx | None, path: str, err: str, perm: int
    ) -> str:
        """C ``errno_from_parents`` (spec 1.4): the nearest existing ancestor decides
        between ``err`` and EACCES. Every ancestor looked at is accessed."""
        name = path
        node = None
        while True:
            name = parent_of(name)
            node = self._get(tx, name)
            if node is not None or name == "/":
                break
        if node is None:
            return "EACCES"
        return err if self.perm_for(conn, node.perms) & perm else "EACCES"

    def _get_node(self, conn: MConn, tx: MTx | None, path: str, perm: int) -> MNode:
        """C ``get_node``: the node if the caller has all of ``perm`` on it."""
        node = self._get(tx, path)
        if node is not None and self.perm_for(conn, node.perms) & perm == perm:
            return node
        err = "ENOENT" if node is None else "EACCES"
        raise Refused(self._errno_from_parents(conn, tx, path, err, perm))

    @staticmethod
    def _canonical(conn: MConn, path: str, allow_special: bool) -> str:
        """Spec 2 for the well-formed paths the tests send: relative paths get
        ``/local/domain/<id>/``; ``@`` only where allowed."""
        if path.startswith("@"):
            if not allow_special:
                raise Refused("EINVAL")
            return path
        if not path.startswith("/"):
            return f"/local/domain/{conn.domid}/{path}"
        return path

    # ------------------------------------------------------------ requests

    def handle(self, key: int, op: int, req_id: int, tx_id: int, payload: bytes) -> None:
        """One request; its reply is queued after the events it caused (spec 5.3)."""
        conn = self.conns[key]
        try:
            reply = self._dispatch(key, conn, op, tx_id, payload, req_id)
        except Refused as error:
            conn.out.append((OP_ERROR, req_id, tx_id, error.name.encode() + b"\0"))
            return
        if reply is not None:
            conn.out.append((op, req_id, tx_id, reply))

    def _dispatch(
        self, key: int, conn: MConn, op: int, tx_id: int, payload: bytes, req_id: int
    ) -> bytes | None:
        tx: MTx | None = None
        if op not in (OP_WATCH, OP_UNWATCH) and tx_id:  # XSA-115: (UN)WATCH skip it
            tx = conn.txs.get(tx_id)
            if tx is None:
                raise Refused("ENOENT")
        args = payload.split(b"\0")
        first = args[0].decode("latin-1")
        if op == OP_WRITE:
            return self._write(key, conn, tx, self._canonical(conn, first, False),
                               payload[len(args[0]) + 1 :], create_only=False)
        if op == OP_MKDIR:
            return self._write(key, conn, tx, self._canonical(conn, first, False), b"",
                               create_only=True)
        if op == OP_READ:
            return self._get_node(conn, tx, self._canonical(conn, first, False), READ).value
        if op == OP_DIRECTORY:
            node = self._get_node(conn, tx, self._canonical(conn, first, False), READ)
            return "".join(name + "\0" for name in node.children).encode()
        if op == OP_GET_PERMS:
            node = self._get_node(conn, tx, self._canonical(conn, first, True), READ)
            return format_perms(node.perms)
        if op == OP_RM:
            return self._rm(key, conn, tx, self._canonical(conn, first, False))
        if op == OP_SET_PERMS:
            texts = [arg.decode() for arg in args[1:-1]]
            return self._set_perms(key, conn, tx, first, texts)
        if op == OP_WATCH:
            texts = [arg.decode() for arg in args[:-1]]
            return self._watch(conn, texts, req_id, tx_id)
        if op == OP_UNWATCH:
            return self._unwatch(conn, first, args[1].decode())
        if op == OP_TX_START:
            return self._tx_start(conn, tx)
        if op == OP_TX_END:
            assert tx_id == 0 or tx is not None
            if tx is None:
                raise Refused("ENOENT")
            return self._tx_end(key, conn, tx_id, tx, first == "T")
        raise AssertionError(f"op {op} is not modelled")

    # ---------------------------------------------------------- node ops

    def _write(
        self, key: int, conn: MConn, tx: MTx | None, path: str, value: bytes, create_only: bool
    ) -> bytes:
        """WRITE and MKDIR (spec 1.5, C ``do_write``/``do_mkdir``/``create_node``)."""
        node = self._get(tx, path)
        if node is not None:
            if self.perm_for(conn, node.perms) & WRITE != WRITE:
                raise Refused(self._errno_from_parents(conn, tx, path, "EACCES", WRITE))
            if create_only:
                return OK  # MKDIR of an existing writable node: no change, no event
            node.value = value
            self._put(tx, path, node)
            self._fire(key, tx, path, SUBTREE, node, None)
            return OK
        err = self._errno_from_parents(conn, tx, path, "ENOENT", WRITE)
        if err != "ENOENT":
            raise Refused(err)
        # Missing ancestors, deepest first; they were all accessed just above.
        missing = [path]
        while self._get(tx, parent_of(missing[-1])) is None:
            missing.append(parent_of(missing[-1]))
        top_parent_path = parent_of(missing[-1])
        top_parent = self._get(tx, top_parent_path)
        assert top_parent is not None
        if tx is not None:
            tx.node_created = True
        # Node quota (spec 6.1, ">="): every new node counts. C QUIRK: C checks
        # each new node against the count from before the request (and outside
        # any transaction delta), so one WRITE may overshoot by several nodes.
        limit = self.quota(conn, "nodes")
        used = self.count_owned(conn.domid) + (tx.delta.get(conn.domid, 0) if tx else 0)
        if limit and used + len(missing) >= limit:
            # C refuses before writing anything here: the transaction stays usable.
            raise Refused("ENOSPC")
        # Spec 3.3: copy the parent's permissions; unprivileged creators own the node.
        perms = top_parent.perms
        if not conn.privileged:
            perms = ((perms[0][0], conn.domid), *perms[1:])
        # Write bottom-up as C does: the node, each new ancestor, the old parent.
        below: str | None = None
        for new_path in missing:
            children = [] if below is None else [below[len(new_path) + (new_path != "/") :]]
            self._put(tx, new_path, MNode(value if new_path == path else b"", perms, children))
            self._charge(tx, perms[0][1], 1)
            below = new_path
        assert below is not None
        top_parent.children.append(below[len(top_parent_path) + (top_parent_path != "/") :])
        self._put(tx, top_parent_path, top_parent)
        # Spec 5.2: one SUBTREE event for the final path only.
        self._fire(key, tx, path, SUBTREE, self._get(tx, path), None)
        return OK

    def _rm(self, key: int, conn: MConn, tx: MTx | None, path: str) -> bytes:
        """RM (spec 1.5, C ``do_rm``/``rm_node``/``delnode_sub``)."""
        try:
            node = self._get_node(conn, tx, path, WRITE)
        except Refused as error:
            if error.name != "ENOENT":
                raise
            # Missing node: fine if the parent exists.
            if self._get(tx, parent_of(path)) is not None:
                return OK
            raise
        if path == "/":
            raise Refused("EINVAL")
        parent_path = parent_of(path)
        parent = self._get(tx, parent_path)
        assert parent is not None
        # Walk: read pre-order (children in list order), delete post-order.
        self._delete_subtree(key, tx, path, node, root=path)
        name = path[len(parent_path) + (parent_path != "/") :]
        # In a transaction the parent's copy may predate the child (C: corrupt(),
        # EIO; the engine and the model: OK, and the commit fails with EAGAIN).
        if name in parent.children:
            parent.children.remove(name)
        self._put(tx, parent_path, parent)
        return OK

    def _delete_subtree(self, key: int, tx: MTx | None, path: str, node: MNode, root: str) -> None:
        for name in list(node.children):
            child = child_path(path, name)
            child_node = self._get(tx, child)
            assert child_node is not None
            self._delete_subtree(key, tx, child, child_node, root)
        self._charge(tx, node.perms[0][1], -1)
        # Fired while the node (and its parent) can still be seen (spec 5.2).
        self._fire(key, tx, path, SUBTREE if path == root else EXACT, node, None)
        self._put(tx, path, None)

    def _set_perms(
        self, key: int, conn: MConn, tx: MTx | None, raw_path: str, texts: list[str]
    ) -> bytes:
        """SET_PERMS (spec 1.5, 3.4, C ``do_set_perms``)."""
        if not texts:
            raise Refused("EINVAL")
        limit = self.quota(conn, "node-permissions")
        if limit and len(texts) >= limit:
            raise Refused("ENOSPC")
        perms = tuple(parse_perm(text) for text in texts)
        path = self._canonical(conn, raw_path, True)
        node = self._get_node(conn, tx, path, WRITE | OWNER)
        if not conn.privileged and perms[0][1] != node.perms[0][1]:
            raise Refused("EPERM")
        old = node.perms
        self._charge(tx, old[0][1], -1)
        node.perms = perms
        self._charge(tx, perms[0][1], 1)
        self._put(tx, path, node)
        self._fire(key, tx, path, SUBTREE, node, old)
        return OK

    # ------------------------------------------------------------ watches

    def _watch(self, conn: MConn, texts: list[str], req_id: int, tx_id: int) -> None:
        """WATCH (spec 5.1): OK, then the initial event with the path as given."""
        given, token = texts[0], texts[1]
        depth = int(texts[2]) if len(texts) == 3 else -1
        if depth < -1 or (len(texts) == 3 and depth < 0):
            raise Refused("EINVAL")
        relative = not given.startswith(("/", "@"))
        path = self._canonical(conn, given, True)
        if any(w.path == path and w.token == token for w in conn.watches):
            raise Refused("EEXIST")
        limit = self.quota(conn, "watches")
        if limit and len(conn.watches) + 1 >= limit:
            raise Refused("ENOSPC")
        prefix = len(f"/local/domain/{conn.domid}") + 1 if relative else 0
        conn.watches.append(MWatch(path, token, depth, prefix))
        conn.out.append((OP_WATCH, req_id, tx_id, OK))
        # C sends it through ``send_event``: it collapses like any other event.
        self._queue_event(conn, path[prefix:], token)
        return None

    def _unwatch(self, conn: MConn, given: str, token: str) -> bytes:
        path = self._canonical(conn, given, True)
        for watch in conn.watches:
            if watch.path == path and watch.token == token:
                conn.watches.remove(watch)
                return OK
        raise Refused("ENOENT")

    def _queue_event(self, conn: MConn, path: str, token: str) -> None:
        """C ``send_event``: an identical unsent event makes it a no-op, except for
        ``@`` paths (spec 5.3, XSA-326)."""
        payload = f"{path}\0{token}\0".encode("latin-1")
        collapsible = not path.startswith("@")
        if collapsible and payload in conn.pending:
            return
        conn.out.append((OP_WATCH_EVENT, 0, 0, payload))
        if collapsible:
            conn.pending.append(payload)

    def _permitted(self, conn: MConn, path: str, node: MNode | None, perms: Perms | None) -> bool:
        """C ``watch_permitted`` (spec 5.4, XSA-115)."""
        if perms is not None and self.perm_for(conn, perms) & READ:
            return True
        if node is None:
            node = self.nodes.get(path)
            if node is None:
                return False
        if self.perm_for(conn, node.perms) & READ:
            return True
        parent = self.nodes.get(parent_of(path))
        return parent is not None and bool(self.perm_for(conn, parent.perms) & READ)

    def _fire(
        self, key: int, tx: MTx | None, path: str, mode: int, node: MNode | None,
        old_perms: Perms | None,
    ) -> None:
        """C ``fire_watches``: queued on the transaction, or sent to every watcher now."""
        if tx is not None:
            access = tx.accessed[path]
            if access.fire is None or mode == SUBTREE:
                access.fire = mode
            return
        self._deliver(path, mode, node, old_perms)

    def _deliver(self, path: str, mode: int, node: MNode | None, perms: Perms | None) -> None:
        for conn in self.conns.values():
            if not self._permitted(conn, path, node, perms):
                continue
            for watch in conn.watches:
                if mode == EXACT:
                    match = path == watch.path
                else:
                    match = is_child(path, watch.path, watch.depth)
                if match:
                    self._queue_event(conn, path[watch.prefix_len :], watch.token)

    # ------------------------------------------------------- transactions

    def _tx_start(self, conn: MConn, tx: MTx | None) -> bytes:
        """Spec 4.1: no nesting (EBUSY); quota with ">="; ids from 1, skipping used ones."""
        if tx is not None:
            raise Refused("EBUSY")
        limit = self.quota(conn, "transactions")
        if limit and len(conn.txs) + 1 >= limit:
            raise Refused("ENOSPC")
        while conn.next_tx == 0 or conn.next_tx in conn.txs:
            conn.next_tx += 1
        tx_id = conn.next_tx
        conn.next_tx += 1
        conn.txs[tx_id] = MTx()
        return f"{tx_id}\0".encode()

    def _tx_end(self, key: int, conn: MConn, tx_id: int, tx: MTx, commit: bool) -> bytes:
        """Spec 4.1/4.2, C ``do_transaction_end``/``finalize_transaction``."""
        del conn.txs[tx_id]  # dead whatever the result
        if not commit:
            return OK
        if tx.failed:
            raise Refused("ENOMEM")
        if tx.node_created and not conn.privileged:
            # C ``acc_fix_domains``: each domain whose node count the transaction
            # touched, unless it shrank, must stay below its quota.
            for domid, delta in tx.delta.items():
                limit = self.quotas.get(domid, DEFAULT_QUOTAS)["nodes"]
                if delta < 0 or not limit or domid == 0:
                    continue
                if self.count_owned(domid) + delta >= limit:
                    raise Refused("ENOSPC")
        for path, access in tx.accessed.items():
            live = self.nodes.get(path)
            if (None if live is None else live.version) != access.orig_version:
                raise Refused("EAGAIN")
        # Apply each modified node and fire its event, in order (C applies and
        # fires one node at a time, so the filter sees a half-applied tree).
        for path, access in tx.accessed.items():
            if not access.modified:
                continue
            if access.node is not None:
                node = copy.deepcopy(access.node)
                node.version = self._stamp()
                self.nodes[path] = node
            else:
                self.nodes.pop(path, None)
            if access.fire is not None:
                self._deliver(path, access.fire, None, access.orig_perms)
        return OK
