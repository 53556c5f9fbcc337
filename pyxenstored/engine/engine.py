"""The engine: one request in, replies and watch events queued out (DESIGN.md).

Pure and synchronous: no I/O, no clock, no trio. The shell feeds it decoded
packets with ``handle`` and drains each connection's bytes with
``take_output``; events a request causes are queued on every watcher
before that request's reply, as in C (spec 5.3).
"""

from collections.abc import Callable

from pyxenstored.config import (
    DOMID_ANY,
    DOMID_SELF,
    FEATURE_DOMID_ANY,
    FEATURE_WATCHDEPTH,
    SUPPORTED_FEATURES,
    Config,
)
from pyxenstored.effects import (
    AttachRing,
    DetachRing,
    Effect,
    LogMessage,
    ResetRing,
    StartLiveUpdate,
)
from pyxenstored.engine import nodes, quotas
from pyxenstored.engine.connection import Connection
from pyxenstored.engine.control import ControlState, run_control
from pyxenstored.engine.domains import (
    Domain,
    DomainInfo,
    DomainStatus,
    DomainTable,
    NoHypervisor,
)
from pyxenstored.engine.live_update import LiveUpdate
from pyxenstored.engine.nodes import Caller
from pyxenstored.engine.write_rate import WriteRateLimit
from pyxenstored.protocol import requests
from pyxenstored.protocol.args import parse_domid
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import OK_PAYLOAD, PAYLOAD_MAX, Packet, encode, error_payload
from pyxenstored.store.node import Node
from pyxenstored.store.paths import canonicalize, domain_path, parent_of
from pyxenstored.store.permissions import (
    IGNORE,
    READ,
    Perm,
    Perms,
    access,
    format_perms,
    owner,
    parse_perms,
    without_domain,
)
from pyxenstored.store.tree import NodeView, Tree
from pyxenstored.transactions import SUBTREE, TransactionView
from pyxenstored.watches import Outbox, Watch, WatchRegistry
from pyxenstored.watches.registry import delivery_order

_PRIVILEGED_OPS = frozenset(
    {
        Op.CONTROL,
        Op.INTRODUCE,
        Op.RELEASE,
        Op.IS_DOMAIN_INTRODUCED,
        Op.RESUME,
        Op.SET_TARGET,
        Op.SET_FEATURE,
        Op.GET_QUOTA,
        Op.SET_QUOTA,
    }
)
#: WATCH and UNWATCH skip the transaction lookup (XSA-115).
_NO_TRANSACTION_OPS = frozenset({Op.WATCH, Op.UNWATCH})
#: Requests whose nodes written outside a transaction cost write credit (XSA-206).
_WRITE_OPS = frozenset({Op.WRITE, Op.MKDIR, Op.RM, Op.SET_PERMS})
#: Requests that change the journaled record of the caller's own domain
#: (its ring connection's watches and transaction ids).
_CALLER_STATE_OPS = frozenset(
    {Op.WATCH, Op.UNWATCH, Op.TRANSACTION_START, Op.TRANSACTION_END, Op.RESET_WATCHES}
)
#: Requests a transaction records with their replies, to replay on conflict
#: (the node operations; everything else ignores the transaction's view).
_RECORDED_OPS = frozenset(
    {
        Op.READ,
        Op.WRITE,
        Op.MKDIR,
        Op.RM,
        Op.DIRECTORY,
        Op.DIRECTORY_PART,
        Op.GET_PERMS,
        Op.SET_PERMS,
    }
)

Handler = Callable[[Connection, TransactionView | None, requests.Request], bytes | None]


class Engine:
    """The whole daemon state and the semantics of every request."""

    def __init__(self, config: Config, domain_info: DomainInfo | None = None) -> None:
        self.config = config
        self.tree = Tree()
        self.watches = WatchRegistry()
        self.domains = DomainTable(config, domain_info or NoHypervisor())
        self.connections: dict[int, Connection] = {}
        self._next_conn_id = 1
        self._dirty: set[int] = set()
        #: The request being handled, for replies that must precede other output.
        self._current = Packet(0, 0, 0, b"")
        self._current_conn_id = 0
        #: Privileged callers carry no limits, so one ``Caller`` serves each identity.
        self._privileged_callers: dict[tuple[int, int | None], Caller] = {}
        #: The CONTROL ``live-update`` session (spec 8.1).
        self.live_update = LiveUpdate()
        #: The shell's last clock reading (``expire_events``); stamps queued output.
        self._now = 0.0
        #: ``set_time``'s reading in whole milliseconds; None before the first.
        self._now_ms: int | None = None
        #: C's write-rate limit (XSA-206): introduced domains' write credit.
        self.write_rate = WriteRateLimit()
        self._effects: list[Effect] = []
        self._handlers: dict[int, Handler] = {
            Op.CONTROL: self._control,
            Op.DIRECTORY: self._directory,
            Op.READ: self._read,
            Op.GET_PERMS: self._get_perms,
            Op.WATCH: self._watch,
            Op.UNWATCH: self._unwatch,
            Op.TRANSACTION_START: self._transaction_start,
            Op.TRANSACTION_END: self._transaction_end,
            Op.INTRODUCE: self._introduce,
            Op.RELEASE: self._release,
            Op.GET_DOMAIN_PATH: self._get_domain_path,
            Op.WRITE: self._write,
            Op.MKDIR: self._mkdir,
            Op.RM: self._rm,
            Op.SET_PERMS: self._set_perms,
            Op.IS_DOMAIN_INTRODUCED: self._is_domain_introduced,
            Op.RESUME: self._resume,
            Op.SET_TARGET: self._set_target,
            Op.RESET_WATCHES: self._reset_watches,
            Op.DIRECTORY_PART: self._directory_part,
            Op.GET_FEATURE: self._get_feature,
            Op.SET_FEATURE: self._set_feature,
            Op.GET_QUOTA: self._get_quota,
            Op.SET_QUOTA: self._set_quota,
        }
        self.control_state = ControlState.from_config(config)
        #: Domains whose journaled record (domain, ring connection) may have
        #: changed since the journal last took them; see ``take_touched``.
        self.touched_domains: set[int] = set()
        #: Whether the global quotas may have changed likewise.
        self.globals_touched = False
        self._build_initial_tree()

    # ------------------------------------------------------------------ setup

    def _build_initial_tree(self) -> None:
        """C's cold-start tree, charged to the privileged domain (spec 2)."""
        priv = self.config.priv_domid
        private: Perms = (Perm(0, priv),)
        tree = self.tree
        tree.create("/", b"", private)
        tree.create("/tool", b"", private)
        tree.create("/tool/xenstored", b"", private)
        tree.create("@introduceDomain", b"", private)
        tree.create("@releaseDomain", b"", (Perm(0, priv), Perm(READ, DOMID_ANY)))
        domain = self.domains.find_or_create(priv)
        if domain is not None:
            domain.introduced = True
            # C introduces the privileged domain at start-up (init_domains).
            self.write_rate.new_domain(priv, self._now_ms)

    # --------------------------------------------------------- shell interface

    def connect_socket(self) -> int:
        """A new Unix-socket connection: it acts as store_domid (spec 3.2)."""
        domid = self.config.store_domid
        return self._connect(domid, is_socket=True, privileged=domid == self.config.priv_domid)

    def _connect(self, domid: int, is_socket: bool, privileged: bool) -> int:
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        self.connections[conn_id] = Connection(
            conn_id, domid, is_socket, privileged, Outbox(self.config.max_output_bytes)
        )
        return conn_id

    def restore_connection(self, domid: int, privileged: bool) -> int:
        """A ring connection rebuilt after a restart; its ring is attached later.
        Its write credit starts afresh, as for a newly introduced domain."""
        self.touched_domains.add(domid)
        self.write_rate.new_domain(domid, self._now_ms)
        return self._connect(domid, is_socket=False, privileged=privileged)

    def adopt_connection(self, conn_id: int, domid: int, is_socket: bool,
                         privileged: bool) -> Connection:
        """A connection handed over by a live update, under its own id (so
        watch delivery keeps its order); its watches and transactions follow."""
        conn = Connection(
            conn_id, domid, is_socket, privileged, Outbox(self.config.max_output_bytes)
        )
        self.connections[conn_id] = conn
        self._next_conn_id = max(self._next_conn_id, conn_id + 1)
        if not is_socket:
            self.write_rate.new_domain(domid, self._now_ms)
        return conn

    def adopt_watch(self, conn: Connection, watch: Watch) -> None:
        conn.watches[(watch.path, watch.token)] = watch
        self.watches.add(watch)
        self.tree.accounting.of(conn.domid).watches += 1

    def adopt_transaction(self, conn: Connection, tx: TransactionView) -> None:
        conn.transactions[tx.tx_id] = tx
        self.tree.accounting.of(conn.domid).transactions += 1
        self.write_rate.transactions += 1

    def restore_watch(self, conn: Connection, watch: Watch) -> None:
        """Re-register a watch after a restart and fire it once: the guest
        re-reads what it watches, so no change made meanwhile goes unseen."""
        self.adopt_watch(conn, watch)
        conn.outbox.event(watch.event_path(watch.path), watch.token, self._now)
        self._dirty.add(conn.conn_id)

    def disconnect(self, conn_id: int) -> None:
        conn = self.connections.pop(conn_id, None)
        if conn is None:
            return
        self.live_update.connection_closed(conn_id)
        self._drop_watches(conn)
        self._drop_transactions(conn)
        self._dirty.discard(conn_id)

    def take_dirty(self) -> set[int]:
        dirty, self._dirty = self._dirty, set()
        return dirty

    def take_output(self, conn_id: int, max_bytes: int | None = None) -> bytes:
        """Queued messages for a connection: all, or whole ones up to ``max_bytes``."""
        conn = self.connections.get(conn_id)
        return conn.outbox.take(max_bytes) if conn is not None else b""

    def set_time(self, now: float) -> None:
        """The shell's clock reading before a batch: it stamps what gets queued."""
        self._now = now
        now_ms = int(now * 1000)
        if self._now_ms is None:
            self.write_rate.start_clock(now_ms)
        self._now_ms = now_ms
        line = self.write_rate.periodic(now_ms)
        if line is not None:
            self.emit(LogMessage(f"write rate limit: {line}"))

    def _write_limited(self, conn: Connection) -> bool:
        """Sockets and the privileged domain escape the write-rate limit."""
        return not conn.is_socket and not conn.privileged

    def write_rate_applies(self, conn_id: int) -> bool:
        """Whether this connection's next request may cost write credit (an
        unprivileged ring while some transaction is open): the shell then
        reads its requests one at a time, as C does."""
        if not self.write_rate.transactions:
            return False
        conn = self.connections.get(conn_id)
        return conn is not None and self._write_limited(conn)

    def write_credit_wait(self, conn_id: int, now: float | None = None) -> float:
        """Seconds before the connection's ring may be read again (C
        ``domain_can_read``: not while its domain's write credit is
        negative); 0.0 when it may be read now. ``now`` sets the time first."""
        if now is not None:
            self.set_time(now)
        conn = self.connections.get(conn_id)
        if conn is None or not self._write_limited(conn):
            return 0.0
        return self.write_rate.wait(conn.domid, self._now_ms) / 1000

    def _debit_writes(self, conn: Connection, count: int) -> None:
        """Charge an unprivileged ring's domain for ``count`` nodes written
        (C ``wrl_apply_debit_actual`` per node)."""
        for _ in range(count):
            line = self.write_rate.debit(conn.domid, self._now_ms)
            if line is not None:
                self.emit(LogMessage(f"write rate limit: {line}"))

    def guest_output_waiting(self) -> bool:
        """Whether an unprivileged receiver has output it has not taken (expiry pending)."""
        return any(
            conn.outbox.messages for conn in self.connections.values() if not conn.privileged
        )

    def expire_events(self, now: float) -> None:
        """Events an unprivileged receiver left unsent past ``watch_event_timeout``
        are dropped (C's ``-w watch-event``, spec 5.7)."""
        self.set_time(now)
        timeout = self.config.watch_event_timeout
        if not timeout:
            return
        for conn in self.connections.values():
            if not conn.privileged and conn.outbox.messages:
                conn.outbox.expire_events(now - timeout)

    def queued_replies(self, conn_id: int) -> int:
        conn = self.connections.get(conn_id)
        return conn.outbox.replies if conn is not None else 0

    def take_effects(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    def emit(self, effect: Effect) -> None:
        self._effects.append(effect)

    def handle(self, conn_id: int, packet: Packet) -> None:
        """Answer one request; its reply goes after any events it caused."""
        conn = self.connections[conn_id]
        self._current = packet
        self._current_conn_id = conn_id
        if conn.privileged and not packet.tx_id and self._answer_directly(conn, packet):
            return
        # XSA-206: while a transaction is open anywhere, an unprivileged
        # ring pays for every node it writes outside a transaction.
        charged = (
            self.write_rate.transactions
            and not packet.tx_id
            and packet.type in _WRITE_OPS
            and self._write_limited(conn)
        )
        nodes_before = len(self.tree.nodes)
        try:
            reply = self._dispatch(conn, packet)
        except XenstoreError as error:
            self._reply(conn, packet, Op.ERROR, error_payload(error.name))
            return
        if charged:
            self._debit_writes(
                conn, nodes_written(packet.type, len(self.tree.nodes) - nodes_before)
            )
        if reply is not None:
            self._reply(conn, packet, packet.type, reply)

    def _answer_directly(self, conn: Connection, packet: Packet) -> bool:
        """Answer the toolstack's commonest requests at a fraction of the cost.

        A privileged READ, or WRITE, of a node that exists, outside a
        transaction, passes every check of the general path: the tree holds
        only valid canonical paths, privilege grants every permission and
        carries no quota, and nothing is charged. So the answer (and the
        watch events) are the general path's, without its parsing and
        checking; anything else returns False and goes the general way.
        """
        op = packet.type
        if op != Op.READ and op != Op.WRITE:
            return False
        payload = packet.payload
        if payload[:1] != b"/":
            return False
        nul = payload.find(b"\0")
        if op == Op.READ:
            if nul != len(payload) - 1:
                return False
            node = self.tree.nodes.get(payload[:-1].decode("latin-1"))
            if node is None:
                return False
            self._reply(conn, packet, op, node.value)
            return True
        if nul < 0:
            return False
        path = payload[:nul].decode("latin-1")
        if path not in self.tree.nodes:
            return False
        node = self.tree.set_value(path, payload[nul + 1 :])
        self.fire(path, SUBTREE, node, None)
        self._reply(conn, packet, op, OK_PAYLOAD)
        return True

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, conn: Connection, packet: Packet) -> bytes | None:
        op = packet.type
        handler = self._handlers.get(op)
        if handler is None:
            raise XenstoreError("ENOSYS")
        if op in _PRIVILEGED_OPS and not conn.privileged:
            raise XenstoreError("EACCES")
        tx = None
        if op not in _NO_TRANSACTION_OPS and packet.tx_id:
            tx = conn.transactions.get(packet.tx_id)
            if tx is None:
                self._lost_transaction(conn, op, packet.tx_id)
                raise XenstoreError("ENOENT")
        if op == Op.WATCH:
            request: requests.Request = requests.parse_watch(
                packet.payload, self._features(conn) & FEATURE_WATCHDEPTH != 0
            )
        else:
            request = requests.PARSERS[op](packet.payload)
        if op in _CALLER_STATE_OPS:
            if not conn.is_socket:
                self.touched_domains.add(conn.domid)
        elif op in _PRIVILEGED_OPS:
            self._touch_named(op, request)
        if tx is not None and tx.recording is not None and op in _RECORDED_OPS:
            return self._recorded(conn, tx, handler, request, packet)
        return handler(conn, tx, request)

    @staticmethod
    def _recorded(
        conn: Connection,
        tx: TransactionView,
        handler: Handler,
        request: requests.Request,
        packet: Packet,
    ) -> bytes | None:
        """Run a node request in ``tx`` and record it with its reply, for
        ``_replayed``. The packet's own payload bytes are kept (no copy)."""
        try:
            reply = handler(conn, tx, request)
        except XenstoreError as error:
            tx.record(packet.type, packet.payload, error.name)
            raise
        tx.record(packet.type, packet.payload, _as_sent(reply))
        return reply

    def _touch_named(self, op: int, request: requests.Request) -> None:
        """Mark for the journal what a privileged request may change."""
        domid = getattr(request, "domid", None)
        if domid is not None:
            self.touched_domains.add(domid)
        elif op in (Op.SET_QUOTA, Op.CONTROL):
            self.globals_touched = True
            if op == Op.CONTROL:  # ``quota`` settings may name any domain
                self.touched_domains.update(self.domains.domains)

    def _lost_transaction(self, conn: Connection, op: int, tx_id: int) -> None:
        """A transaction that was open when the daemon crashed cannot be
        finished: EAGAIN makes the client's retry loop start it afresh (an
        ended one is forgotten)."""
        if tx_id in conn.lost_transactions:
            if op == Op.TRANSACTION_END:
                conn.lost_transactions.discard(tx_id)
                self.touched_domains.add(conn.domid)
            raise XenstoreError("EAGAIN")

    def take_touched(self) -> tuple[set[int], bool]:
        """Domains and globals touched since the last call (for the journal)."""
        touched, self.touched_domains = self.touched_domains, set()
        globals_touched, self.globals_touched = self.globals_touched, False
        return touched, globals_touched

    def _reply(self, conn: Connection, packet: Packet, op: int, payload: bytes) -> None:
        if len(payload) > PAYLOAD_MAX:
            op, payload = Op.ERROR, error_payload("E2BIG")
        conn.outbox.reply(encode(op, packet.req_id, packet.tx_id, payload), self._now)
        self._dirty.add(conn.conn_id)

    # ------------------------------------------------------------ identities

    def _domain_of(self, conn: Connection) -> Domain | None:
        return None if conn.is_socket else self.domains.get(conn.domid)

    def _features(self, conn: Connection) -> int:
        domain = self._domain_of(conn)
        return domain.features if domain is not None else SUPPORTED_FEATURES

    def limit(self, conn: Connection, name: str) -> int:
        """The caller's hard quota ``name``; 0 (unlimited) for privileged callers."""
        if conn.privileged:
            return 0
        domain = self.domains.find_or_create(conn.domid)
        return domain.hard_quotas.get(name, 0) if domain is not None else 0

    def _caller(self, conn: Connection, tx: TransactionView | None) -> Caller:
        if conn.privileged:
            key = (conn.domid, conn.target)
            caller = self._privileged_callers.get(key)
            if caller is None:
                caller = self._privileged_callers[key] = Caller(conn.domid, conn.target, True)
            return caller
        usage = self.tree.accounting.of(conn.domid)
        pending = tx.pending_nodes(conn.domid) if tx is not None else 0
        return Caller(
            conn.domid,
            conn.target,
            False,
            node_limit=self.limit(conn, "nodes"),
            node_size_limit=self.limit(conn, "node-size"),
            memory_limit=self.limit(conn, "memory"),
            nodes_used=usage.nodes + pending,
            memory_used=usage.memory,
        )

    def _canonical(self, conn: Connection, path: str, allow_special: bool = False) -> str:
        return canonicalize(path, conn.domid, allow_special, self.limit(conn, "path-max"))

    # ----------------------------------------------------------------- events

    def _notifier(self, tx: TransactionView | None) -> nodes.Notify:
        return tx.notify if tx is not None else self.fire

    def _may_see(
        self, conn: Connection, path: str, node: Node | None, old_perms: Perms | None
    ) -> bool:
        """XSA-115 (C ``watch_permitted``): the watcher must be able to read the
        node before the change, or now, or its parent. A node that exists
        neither before nor now (created and removed in one transaction) is
        seen by nobody, privileged watchers included."""
        if old_perms is not None and (
            conn.privileged or access(old_perms, conn.domid, conn.target, False) & READ
        ):
            return True
        if node is None:
            node = self.tree.get(path)
            if node is None:
                return False
        if conn.privileged or access(node.perms, conn.domid, conn.target, False) & READ:
            return True
        parent = self.tree.get(parent_of(path))
        return parent is not None and bool(
            access(parent.perms, conn.domid, conn.target, False) & READ
        )

    def fire(self, path: str, mode: int, node: Node | None, old_perms: Perms | None) -> None:
        """Queue the event for ``path`` on every permitted matching watch."""
        matches = self.watches.subtree(path) if mode else list(self.watches.exact(path))
        if not matches:
            return
        if len(matches) > 1:
            matches.sort(key=delivery_order)
        verdicts: dict[int, bool] = {}
        for watch in matches:
            conn = self.connections[watch.conn_id]
            allowed = verdicts.get(watch.conn_id)
            if allowed is None:
                allowed = verdicts[watch.conn_id] = self._may_see(conn, path, node, old_perms)
            if allowed and conn.outbox.event(watch.event_path(path), watch.token, self._now):
                self._dirty.add(watch.conn_id)

    def fire_special(
        self, name: str, domid: int, plain: bool = True, per_domain: bool = True
    ) -> None:
        """``@introduceDomain``/``@releaseDomain`` in plain and per-domain forms (spec 5.6)."""
        special = self.tree.get(name)
        matches = sorted(
            self.watches.special(name, domid, plain, per_domain),
            key=lambda pair: delivery_order(pair[0]),
        )
        for watch, path in matches:
            conn = self.connections[watch.conn_id]
            if special is not None and not self._may_see(conn, name, special, None):
                continue
            if conn.outbox.event(path, watch.token, self._now):
                self._dirty.add(watch.conn_id)

    # ------------------------------------------------------------- node ops

    def _view(self, tx: TransactionView | None) -> NodeView:
        return tx if tx is not None else self.tree

    def _read(self, conn: Connection, tx: TransactionView | None, req: requests.Request) -> bytes:
        assert isinstance(req, requests.PathRequest)
        caller = self._caller(conn, tx)
        return nodes.read(self._view(tx), caller, self._canonical(conn, req.path))

    def _directory(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.PathRequest)
        path = self._canonical(conn, req.path)
        return nodes.checked(self._view(tx), self._caller(conn, tx), path, READ).child_list()

    def _directory_part(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.DirectoryPart)
        path = self._canonical(conn, req.path)
        node = nodes.checked(self._view(tx), self._caller(conn, tx), path, READ)
        return directory_part(node, req.offset)

    def _get_perms(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.PathRequest)
        path = self._canonical(conn, req.path, allow_special=True)
        return format_perms(nodes.checked(self._view(tx), self._caller(conn, tx), path, READ).perms)

    def _write(self, conn: Connection, tx: TransactionView | None, req: requests.Request) -> bytes:
        assert isinstance(req, requests.Write)
        path = self._canonical(conn, req.path)
        self._guard(tx, lambda: nodes.write(
            self._view(tx), self._caller(conn, tx), path, req.value, self._notifier(tx)
        ))
        return OK_PAYLOAD

    def _mkdir(self, conn: Connection, tx: TransactionView | None, req: requests.Request) -> bytes:
        assert isinstance(req, requests.PathRequest)
        path = self._canonical(conn, req.path)
        self._guard(tx, lambda: nodes.mkdir(
            self._view(tx), self._caller(conn, tx), path, self._notifier(tx)
        ))
        return OK_PAYLOAD

    def _rm(self, conn: Connection, tx: TransactionView | None, req: requests.Request) -> bytes:
        assert isinstance(req, requests.PathRequest)
        path = self._canonical(conn, req.path)
        self._guard(tx, lambda: nodes.rm(
            self._view(tx), self._caller(conn, tx), path, self._notifier(tx)
        ))
        return OK_PAYLOAD

    def _set_perms(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.SetPerms)
        limit = self.limit(conn, "node-permissions")
        if limit and len(req.perms) >= limit:
            raise XenstoreError("ENOSPC")
        perms = self._checked_perms(conn, parse_perms(req.perms))
        path = self._canonical(conn, req.path, allow_special=True)
        self._guard(tx, lambda: nodes.set_perms(
            self._view(tx), self._caller(conn, tx), path, perms, self._notifier(tx)
        ))
        return OK_PAYLOAD

    def _checked_perms(self, conn: Connection, perms: Perms) -> Perms:
        """Flag entries for unknown domains stale; an unknown owner is ENOENT (spec 3.5)."""
        may_use_any = self._features(conn) & FEATURE_DOMID_ANY
        result = []
        for perm in perms:
            if perm.domid == DOMID_ANY:
                stale = not may_use_any
            else:
                stale = self.domains.find_or_create(perm.domid) is None
            result.append(Perm(perm.flags | IGNORE, perm.domid) if stale else perm)
        if result[0].flags & IGNORE:
            raise XenstoreError("ENOENT")
        return tuple(result)

    @staticmethod
    def _guard(tx: TransactionView | None, operation: Callable[[], None]) -> None:
        """A failed change inside a transaction fails the whole transaction (XSA-414/415).

        Permission and lookup errors change nothing and leave it usable;
        quota refusals mark it, as C reports them after partial work, except
        those C makes before writing anything.
        """
        try:
            operation()
        except nodes.RefusedBeforeWriting:
            raise
        except XenstoreError as error:
            if tx is not None and error.name in ("ENOSPC", "ENOMEM"):
                tx.failed = True
            raise

    # --------------------------------------------------------------- watches

    def _watch(self, conn: Connection, tx: TransactionView | None, req: requests.Request) -> None:
        assert isinstance(req, requests.Watch)
        relative = req.path[:1] not in ("/", "@")
        path = self._canonical(conn, req.path, allow_special=True)
        key = (path, req.token)
        if key in conn.watches:
            raise XenstoreError("EEXIST")
        limit = self.limit(conn, "watches")
        if limit and len(conn.watches) + 1 >= limit:
            raise XenstoreError("ENOSPC")
        prefix_len = len(domain_path(conn.domid)) + 1 if relative else 0
        watch = Watch(conn.conn_id, path, req.token, req.depth, prefix_len)
        conn.watches[key] = watch
        self.watches.add(watch)
        self.tree.accounting.of(conn.domid).watches += 1
        self._reply_now(conn, Op.WATCH, OK_PAYLOAD)
        # Unfiltered, but otherwise an ordinary event: C sends it with
        # ``send_event``, which collapses it into an identical unsent one.
        conn.outbox.event(watch.event_path(path), req.token, self._now)
        return None

    def _reply_now(self, conn: Connection, op: int, payload: bytes) -> None:
        """Queue the reply before something that must follow it (the WATCH initial event)."""
        packet = self._current
        conn.outbox.reply(encode(op, packet.req_id, packet.tx_id, payload), self._now)
        self._dirty.add(conn.conn_id)

    def _unwatch(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.Unwatch)
        path = self._canonical(conn, req.path, allow_special=True)
        watch = conn.watches.pop((path, req.token), None)
        if watch is None:
            raise XenstoreError("ENOENT")
        self.watches.remove(watch)
        self.tree.accounting.of(conn.domid).watches -= 1
        return OK_PAYLOAD

    def _drop_watches(self, conn: Connection) -> None:
        for watch in conn.watches.values():
            self.watches.remove(watch)
        self.tree.accounting.of(conn.domid).watches -= len(conn.watches)
        conn.watches.clear()

    def _reset_watches(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        """Drops the caller's transactions too, including one it is sent in (XSA-484)."""
        self._drop_watches(conn)
        self._drop_transactions(conn)
        return OK_PAYLOAD

    # ---------------------------------------------------------- transactions

    def _transaction_start(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        if tx is not None:
            raise XenstoreError("EBUSY")
        limit = self.limit(conn, "transactions")
        if limit and len(conn.transactions) + 1 >= limit:
            raise XenstoreError("ENOSPC")
        tx_id = conn.next_tx_id()
        self.tree.next_generation()
        replay = self.config.replay_max_requests
        conn.transactions[tx_id] = TransactionView(
            self.tree,
            tx_id,
            self.limit(conn, "transaction-nodes"),
            recording=[] if replay else None,
            replay_limit=replay,
        )
        self.tree.accounting.of(conn.domid).transactions += 1
        self.write_rate.transactions += 1
        return f"{tx_id}\0".encode()

    def _transaction_end(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.TransactionEnd)
        if tx is None:
            raise XenstoreError("ENOENT")
        del conn.transactions[tx.tx_id]
        self.tree.accounting.of(conn.domid).transactions -= 1
        self.write_rate.transactions -= 1
        if not req.commit:
            return OK_PAYLOAD
        if tx.failed:
            raise XenstoreError("ENOMEM")
        if tx.created_node and not conn.privileged:
            self._check_commit_quota(tx)
        if tx.conflicts():
            replayed = self._replayed(conn, tx)
            if replayed is None:
                raise XenstoreError("EAGAIN")
            tx = replayed
            if tx.created_node and not conn.privileged:
                self._check_commit_quota(tx)
        tx.apply(lambda path, mode, perms: self.fire(path, mode, None, perms))
        # XSA-206: a commit costs one write while other transactions are
        # open (C: ``wrl_ntransactions > 1``, this one still counted).
        if self.write_rate.transactions and self._write_limited(conn):
            self._debit_writes(conn, 1)
        return OK_PAYLOAD

    def _replayed(self, conn: Connection, tx: TransactionView) -> TransactionView | None:
        """``tx`` run again on the current tree, or None (EAGAIN) if that gives
        any reply other than the one the client got (oxenstored's replay,
        spec 4.3).

        Each recorded request goes through the same handler against a fresh
        view. If every reply is the same bytes (or error name), the fresh view
        is a transaction that ran entirely now and showed the client exactly
        what it saw, so committing it instead is serializable; the client
        cannot tell. Nothing outside the fresh view changes meanwhile: the
        handlers are called directly (not ``_dispatch``: no journal marks),
        and given a transaction they queue its events in it and debit no
        write credit; accounting moves only when the caller applies it.

        A fresh view that got *failed* (a quota refusal that the first run met
        before writing, and this one after) is EAGAIN, not ENOMEM: the client
        saw no failure, and C answers a conflict with EAGAIN. A replay that
        matches is then quota-checked like any commit.
        """
        recording = tx.recording
        if recording is None:
            return None
        fresh = tx.restarted()
        handlers, parsers = self._handlers, requests.PARSERS
        for op, payload, reply in recording:
            try:
                again: bytes | str = _as_sent(handlers[op](conn, fresh, parsers[op](payload)))
            except XenstoreError as error:
                again = error.name
            if again != reply:
                return None
        return None if fresh.failed else fresh

    def _check_commit_quota(self, tx: TransactionView) -> None:
        """C ``acc_fix_domains``: every unprivileged domain whose node count the
        transaction touched and did not lower must stay under its quota."""
        for domid, delta in tx.node_deltas.items():
            if delta < 0 or domid == self.config.priv_domid:
                continue
            domain = self.domains.find_or_create(domid)
            limit = domain.hard_quotas.get("nodes", 0) if domain is not None else 0
            if limit and self.tree.accounting.of(domid).nodes + delta >= limit:
                raise XenstoreError("ENOSPC")

    def _drop_transactions(self, conn: Connection) -> None:
        self.tree.accounting.of(conn.domid).transactions -= len(conn.transactions)
        self.write_rate.transactions -= len(conn.transactions)
        conn.transactions.clear()

    # --------------------------------------------------------------- domains

    def _introduce(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.Introduce)
        self.introduce_domain(req.domid, req.port)
        return OK_PAYLOAD

    def introduce_domain(self, domid: int, port: int) -> None:
        """INTRODUCE, also used for domains found running at start-up (C >= 4.21).

        Records the domain and gives it a connection whose ring the shell
        attaches; a known domain's connection is reset and its port rebound.
        """
        domain = self.domains.find_or_create(domid)
        if domain is None:
            # C allocates the record anyway and fails to map the missing
            # domain's ring, which Xen answers with ENOENT.
            raise XenstoreError("ENOENT")
        self.touched_domains.add(domid)
        domain.port = port
        if not domain.introduced:
            domain.introduced = True
            domain.conn_id = self._connect(domid, is_socket=False, privileged=False)
            self.write_rate.new_domain(domid, self._now_ms)
            self.emit(AttachRing(domid, domain.conn_id, port))
            if domid != self.config.priv_domid:
                self.fire_special("@introduceDomain", domid)
        elif domain.conn_id is not None:
            self.reset_connection(domain.conn_id)
            self.emit(ResetRing(domid, domain.conn_id, port))

    def _connected_domain(self, domid: int) -> Domain:
        domain = self.domains.get(domid)
        if domain is None or not domain.introduced:
            raise XenstoreError("ENOENT")
        if domain.conn_id is None:
            raise XenstoreError("EINVAL")
        return domain

    def _released_domain(self, req: requests.Request) -> Domain:
        assert isinstance(req, requests.DomainRequest)
        if req.domid in (self.config.store_domid, self.config.priv_domid):
            raise XenstoreError("EINVAL")
        return self._connected_domain(req.domid)

    def _release(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        domain = self._released_domain(req)
        self._domain_gone(domain)
        return OK_PAYLOAD

    def _domain_gone(self, domain: Domain) -> None:
        """Close the domain's ring connection (its watches first, so they see
        nothing of the cleanup), then clean up after it."""
        if domain.conn_id is not None:
            self._drop_watches(self.connections[domain.conn_id])
            self.emit(DetachRing(domain.domid, domain.conn_id))
            self.disconnect(domain.conn_id)
            domain.conn_id = None
        self.destroy_domain(domain.domid)

    def check_domains(self, statuses: dict[int, DomainStatus]) -> None:
        """Take the hypervisor's view after VIRQ_DOM_EXC (C ``check_domains``).

        A newly shut down domain fires the per-domain ``@releaseDomain`` form
        once (RESUME re-arms it) and one plain event follows the scan; a dying
        or vanished domain is destroyed, which fires both forms (spec 5.6).
        """
        announce = False
        for domain in list(self.domains.domains.values()):
            if domain.domid == self.config.priv_domid:
                continue
            status = statuses.get(domain.domid)
            if not domain.introduced:
                # A record made for a quota, feature or ACL entry: C frees it
                # when the domain goes, and grants to it must not outlive it.
                if status is None or status.dying:
                    self.destroy_domain(domain.domid, announce=False)
                continue
            if status is None or status.dying:
                self._domain_gone(domain)
                continue
            if status.shutdown and not domain.shutdown_reported:
                domain.shutdown_reported = True
                self.touched_domains.add(domain.domid)
                self.fire_special("@releaseDomain", domain.domid, plain=False)
                announce = True
        if announce:
            self.fire_special("@releaseDomain", 0, per_domain=False)

    def connect_local_ring(self) -> int:
        """A ring connection for the privileged domain's own kernel (C ``dom0_init``).

        A daemon running in dom0 serves dom0's xenbus through the page its
        kernel exports; that connection acts as, and is as privileged as, dom0.
        """
        domid = self.config.priv_domid
        domain = self.domains.find_or_create(domid)
        assert domain is not None
        domain.introduced = True
        if domain.conn_id is None:  # else restored after a crash
            domain.conn_id = self._connect(domid, is_socket=False, privileged=True)
            self.touched_domains.add(domid)
        return domain.conn_id

    def reset_connection(self, conn_id: int) -> None:
        """Start a ring connection afresh: no watches, transactions or queued
        output (re-INTRODUCE, or the guest's reconnect request, spec 7.4)."""
        conn = self.connections.get(conn_id)
        if conn is None:
            return
        self._drop_watches(conn)
        self._drop_transactions(conn)
        conn.lost_transactions.clear()
        conn.outbox.clear()
        if not conn.is_socket:
            self.touched_domains.add(conn.domid)

    def ignore_connection(self, conn_id: int) -> None:
        """A ring broke the protocol: forget its state but keep the domain (XSA-325)."""
        self.reset_connection(conn_id)
        conn = self.connections.get(conn_id)
        if conn is not None:
            conn.ignored = True

    def outstanding_limit(self, conn_id: int) -> int:
        """Replies a connection may have queued before the shell stops reading it (0 = none)."""
        conn = self.connections.get(conn_id)
        return self.limit(conn, "outstanding") if conn is not None else 0

    def destroy_domain(self, domid: int, announce: bool = True) -> None:
        """A domain is gone: its nodes, ACL entries and record go too (spec 3.6).

        ``announce`` fires ``@releaseDomain``, which only introduced domains do.
        """
        priv = self.config.priv_domid
        self.touched_domains.add(domid)
        stripped: list[tuple[str, Perms]] = []
        orphans: list[str] = []
        for path, node in list(self._all_nodes()):
            if owner(node.perms) == domid:
                orphans.append(path)
            elif any(perm.domid == domid for perm in node.perms[1:]):
                stripped.append((path, without_domain(node.perms, domid)))
        for path, perms in stripped:
            if path in self.tree.nodes:
                self.tree.set_perms(path, perms)
        for path in orphans:
            orphan = self.tree.get(path)
            if orphan is None:
                continue
            # The root and the special nodes must outlive any domain: they go
            # to priv, without the dead domain's own ACL entries (XSA-417).
            if self.config.keep_orphans or path[0] == "@" or path == "/":
                handed = (Perm(orphan.perms[0].flags, priv), *orphan.perms[1:])
                self.tree.set_perms(path, without_domain(handed, domid))
            else:
                nodes.remove_subtree(self.tree, path, self.fire)
        self.domains.remove(domid)
        self.write_rate.destroy_domain(domid)
        self.tree.accounting.forget(domid)
        if announce:
            self.fire_special("@releaseDomain", domid)

    def _all_nodes(self) -> list[tuple[str, Node]]:
        """Every node, parents before children, then the special nodes."""
        result = list(self.tree.walk("/"))
        for special in ("@releaseDomain", "@introduceDomain"):
            node = self.tree.get(special)
            if node is not None:
                result.append((special, node))
        return result

    def _resume(self, conn: Connection, tx: TransactionView | None, req: requests.Request) -> bytes:
        self._released_domain(req).shutdown_reported = False
        return OK_PAYLOAD

    def _get_domain_path(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.DomainRequest)
        return domain_path(req.domid).encode() + b"\0"

    def _is_domain_introduced(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.DomainRequest)
        domain = self.domains.get(req.domid)
        introduced = req.domid == DOMID_SELF or (domain is not None and domain.introduced)
        return b"T\0" if introduced else b"F\0"

    def _set_target(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.SetTarget)
        domain = self._connected_domain(req.domid)
        self._connected_domain(req.target)
        assert domain.conn_id is not None
        self.connections[domain.conn_id].target = req.target
        return OK_PAYLOAD

    def _get_feature(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.GetFeature)
        if not req.args:
            return f"{self._features(conn)}\0".encode()
        if not conn.privileged:
            raise XenstoreError("EACCES")
        if len(req.args) > 1:
            raise XenstoreError("EINVAL")
        domain = self.domains.find_or_create(parse_domid(req.args[0]))
        if domain is None:
            raise XenstoreError("ENOENT")
        return f"{domain.features}\0".encode()

    def _set_feature(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.SetFeature)
        domain = self.domains.find_or_create(req.domid)
        if domain is None:
            raise XenstoreError("ENOENT")
        if domain.introduced:
            raise XenstoreError("EBUSY")
        if req.value & ~SUPPORTED_FEATURES:
            raise XenstoreError("EINVAL")
        domain.features = req.value
        return OK_PAYLOAD

    def _get_quota(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.GetQuota)
        return quotas.get_quota(self.config, self.domains, req)

    def _set_quota(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes:
        assert isinstance(req, requests.SetQuota)
        quotas.set_quota(self.config, self.domains, req)
        return OK_PAYLOAD

    def _control(
        self, conn: Connection, tx: TransactionView | None, req: requests.Request
    ) -> bytes | None:
        assert isinstance(req, requests.Control)
        return run_control(self, req)

    def live_update_request(self, args: tuple[str, ...]) -> bytes | None:
        """CONTROL ``live-update`` from the current request; None while the
        update runs (the new instance, or ``live_update_failed``, answers)."""
        packet = self._current
        text, start = self.live_update.control(
            self._current_conn_id, packet.req_id, packet.tx_id, args
        )
        if start is not None:
            self.emit(start)
            return None
        assert text is not None
        return text.encode() + b"\0"

    def live_update_reply(self, start: StartLiveUpdate, text: str) -> bytes:
        """The message answering ``start``'s request with ``text``."""
        return encode(Op.CONTROL, start.req_id, start.tx_id, text.encode() + b"\0")

    def live_update_failed(self, start: StartLiveUpdate, reason: str) -> None:
        """The update did not happen: answer the requester, end the session."""
        self.live_update.finished()
        conn = self.connections.get(start.conn_id)
        if conn is not None:
            conn.outbox.reply(self.live_update_reply(start, reason), self._now)
            self._dirty.add(conn.conn_id)


def nodes_written(op: int, added: int) -> int:
    """How many nodes C writes (``access_node``) for a successful WRITE,
    MKDIR, RM or SET_PERMS outside a transaction that added ``added`` nodes
    to the tree (negative: removed).

    Creating writes each new node and the existing parent whose child list
    grows; RM removes each node of the subtree and rewrites its parent;
    WRITE of an existing node and SET_PERMS write one node; MKDIR of an
    existing node and RM of a missing one write nothing.
    """
    if added > 0:
        return added + 1
    if added < 0:
        return 1 - added
    return 0 if op in (Op.MKDIR, Op.RM) else 1


def directory_part(node: Node, offset: int) -> bytes:
    """One chunk of the child list after ``offset`` (C ``send_directory_part``, spec 1.5)."""
    generation = f"{node.generation}\0".encode()
    listing = node.child_list()
    if offset >= len(listing):
        return generation + b"\0"
    limit = PAYLOAD_MAX - len(generation) - 1
    end = offset
    while True:
        nul = listing.index(b"\0", end)
        if (end - offset) + (nul - end) >= limit:
            break
        end = nul + 1
        if end == len(listing):
            return generation + listing[offset:end] + b"\0"
    return generation + listing[offset:end]


def _as_sent(reply: bytes | None) -> bytes | str:
    """A node request's reply as its client gets it: ``_reply`` answers E2BIG
    for an oversized payload, so that is what a recording keeps (and holds
    at most PAYLOAD_MAX bytes of reply)."""
    assert reply is not None
    return reply if len(reply) <= PAYLOAD_MAX else "E2BIG"
