"""The Xen xenstore migration stream, out of an engine and back (issue 6).

The format is Xen's ``docs/designs/xenstore-migration.md`` (spec 8.3): a
16-byte preamble, then records of ``type`` u32, ``len`` u32, a body and
padding to 8 bytes, ending with END. C xenstored writes it for live update
(``<rundir>/state_dump``); this module writes and reads it so that state
can move between pyxenstored and the C daemon, and be inspected.

Everything here is pure: bytes in, bytes out, an engine to read or fill.

What goes out (``export``), in C's order:

- GLOBAL_DATA (the listening socket's and the event channel's fds, -1
  unless the caller names them), GLOBAL_QUOTA_DATA (the global defaults);
- CONNECTION_DATA for every connection in creation order, each followed
  by its watches (WATCH_DATA, or WATCH_DATA_EXTENDED for a watch with a
  depth in a version 2 stream). The output data is every message still
  queued for the connection, byte-exact, after the tail of a message the
  shell began to send; the input data is what the shell read and did not
  hand over yet (both from ``pending_io``: the engine holds neither);
- NODE_DATA for every committed node: a pre-order walk from ``/`` in
  child-list order, then ``@releaseDomain`` and ``@introduceDomain``;
- TRANSACTION_DATA for every open transaction, each followed by the
  NODE_DATA records of the nodes it accessed, in first-access order (C
  never writes these); see "Transactions" below;
- DOMAIN_DATA for every known domain record (quotas by name, features);
- END.

What comes in (``import_stream``) into a newly made engine: the tree with
generations renumbered as C does (each NODE_DATA record takes the next
generation, in stream order), children in the order their NODE_DATA
records come (C appends each restored node to its parent's list, so a
pre-order writer keeps the order), domains, ring connections with their
watches, queued output and open transactions. Socket connections cannot be
rebuilt without their file descriptors, so they are reported to the caller
in ``ImportResult.sockets``, with their watches and pending data.

Transactions: the design's records carry only the nodes a transaction
accessed. pyxenstored adds what its commit needs and the records cannot
say (whether each node changed since the transaction first read it, the
watch events queued for commit, the child lists of changed directories,
the per-owner node count deltas, a failed or lost transaction) as an
extension at the end of the TRANSACTION_DATA body, after the 8 bytes the
design defines, tagged ``pyxs``. Readers that follow the design read the
first 8 bytes and skip the rest by the record length; without the
extension this reader derives that information as well as it can.

A record's ``len`` counts its padding, as C writes it: C's readers step
from record to record by ``len`` alone, where the design has them skip
the padding too. This reader accepts both.

C's readers (4.17 and later) treat every NODE_DATA record as a committed
node, pending ones included: give C a stream made with
``transactions=False`` (and ``version=1`` for C before 4.18).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

import attrs

from pyxenstored.config import DOMID_INVALID, QUOTA_NAMES
from pyxenstored.effects import AttachRing
from pyxenstored.engine import Engine
from pyxenstored.engine.connection import Connection
from pyxenstored.engine.domains import Domain
from pyxenstored.engine.quotas import SOFT_PREFIX
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER_SIZE
from pyxenstored.store.node import NO_GENERATION, Node, footprint
from pyxenstored.store.paths import basename, canonicalize, domain_path, parent_of
from pyxenstored.store.permissions import IGNORE, READ, WRITE, Perm, Perms, owner
from pyxenstored.store.tree import Tree
from pyxenstored.transactions import TransactionView
from pyxenstored.transactions.transaction import EXACT, SUBTREE
from pyxenstored.watches import Watch

IDENT: Final = b"xenstore"
#: Versions this module reads; it writes either.
VERSIONS: Final = (1, 2)

END: Final = 0
GLOBAL_DATA: Final = 1
CONNECTION_DATA: Final = 2
WATCH_DATA: Final = 3
TRANSACTION_DATA: Final = 4
NODE_DATA: Final = 5
GLOBAL_QUOTA_DATA: Final = 6
DOMAIN_DATA: Final = 7
WATCH_DATA_EXTENDED: Final = 8

RECORD_NAMES: Final = {
    END: "END",
    GLOBAL_DATA: "GLOBAL_DATA",
    CONNECTION_DATA: "CONNECTION_DATA",
    WATCH_DATA: "WATCH_DATA",
    TRANSACTION_DATA: "TRANSACTION_DATA",
    NODE_DATA: "NODE_DATA",
    GLOBAL_QUOTA_DATA: "GLOBAL_QUOTA_DATA",
    DOMAIN_DATA: "DOMAIN_DATA",
    WATCH_DATA_EXTENDED: "WATCH_DATA_EXTENDED",
}

CONN_RING: Final = 0
CONN_SOCKET: Final = 1
#: CONNECTION_DATA ``fields``: a u64 unique id follows the data.
FIELD_UNIQUE_ID: Final = 0x0001

#: NODE_DATA ``access`` of a pending (transaction) node.
TA_DELETED: Final = 0x0000
TA_READ: Final = 0x0001
TA_WRITTEN: Final = 0x0002

#: A permission's ``flags``: stale, ignore when checking (XSA-322).
PERM_FLAG_IGNORE: Final = 0x01
#: WATCH_DATA_EXTENDED ``depth`` of an unlimited watch.
DEPTH_UNLIMITED: Final = 0xFFFF

_LETTERS: Final = {0: ord("n"), READ: ord("r"), WRITE: ord("w"), READ | WRITE: ord("b")}
_FLAGS: Final = {letter: flags for flags, letter in _LETTERS.items()}

#: The pyxenstored extension of TRANSACTION_DATA (see the module docstring).
EXT_TAG: Final = b"pyxs"
EXT_VERSION: Final = 1
TX_FAILED: Final = 0x0001
TX_CREATED_NODE: Final = 0x0002
#: A transaction open when pyxenstored crashed: it can only end in EAGAIN.
TX_LOST: Final = 0x0004
NODE_STALE: Final = 0x01
NODE_EVENT_EXACT: Final = 0x02
NODE_EVENT_SUBTREE: Final = 0x04
NODE_CHILDREN: Final = 0x08
#: The first-access generation given to a node that had changed since its
#: transaction first read it: it matches no node, so the commit fails.
STALE_GENERATION: Final = NO_GENERATION - 1

_NATIVE: Final = "<" if sys.byteorder == "little" else ">"


class MigrationError(ValueError):
    """A stream this module cannot read, or a state it cannot write."""


# ------------------------------------------------------------------ records


@attrs.frozen
class GlobalData:
    socket_fd: int
    evtchn_fd: int


@attrs.frozen
class QuotaData:
    """GLOBAL_QUOTA_DATA (``domid`` None) or DOMAIN_DATA."""

    domid: int | None
    #: Name and value, in stream order (``soft-`` names for soft quotas).
    quotas: tuple[tuple[str, int], ...]
    #: DOMAIN_DATA: the domain's feature word (only valid in version 2).
    features: int = 0
    #: GLOBAL_QUOTA_DATA: how many of ``quotas`` apply per domain.
    n_dom: int = 0


@attrs.frozen
class ConnectionData:
    conn_id: int
    conn_type: int
    fields: int
    #: Ring connections: the domain, its target (or DOMID_INVALID) and
    #: the event channel port the writer had.
    domid: int = 0
    tdomid: int = DOMID_INVALID
    evtchn: int = 0
    #: Socket connections: the connected socket's fd.
    fd: int = -1
    #: Read from the connection and not processed yet: complete requests,
    #: then possibly a partial one.
    in_data: bytes = b""
    #: The tail of a message partly written to the connection.
    partial_out: bytes = b""
    #: Whole messages not written yet, header and payload each.
    messages: tuple[bytes, ...] = ()
    unique_id: int | None = None


@attrs.frozen
class WatchData:
    conn_id: int
    #: The path as given to WATCH (relative paths stay relative).
    path: str
    token: str
    #: -1: unlimited.
    depth: int = -1
    extended: bool = False
    #: WATCH_DATA_EXTENDED as C's writer emits it: the path at offset 8, no
    #: depth, and a length counted for the design's 12-byte layout, so up
    #: to 8 bytes more than it wrote (spec 8.3 [BUG?]).
    c_layout: bool = False


@attrs.frozen
class TxNodeExtra:
    """The extension's word on one pending node."""

    stale: bool = False
    #: EXACT or SUBTREE: the watch event queued for commit; None: none.
    event: int | None = None
    #: The child list of the transaction's copy, when listed.
    children: tuple[str, ...] | None = None


@attrs.frozen
class TxExtension:
    flags: int = 0
    #: The transaction-nodes quota the transaction started with.
    node_limit: int = 0
    deltas: tuple[tuple[int, int], ...] = ()
    nodes: tuple[TxNodeExtra, ...] = ()


@attrs.frozen
class TransactionData:
    conn_id: int
    tx_id: int
    extension: TxExtension | None = None


@attrs.frozen
class NodeData:
    #: 0: a committed node; else the connection of the pending transaction.
    conn_id: int
    tx_id: int
    path: str
    value: bytes
    access: int
    perms: Perms


@attrs.frozen
class UnknownRecord:
    type: int
    body: bytes


Record = (
    GlobalData
    | QuotaData
    | ConnectionData
    | WatchData
    | TransactionData
    | NodeData
    | UnknownRecord
)


@attrs.frozen
class Stream:
    version: int
    big_endian: bool
    records: tuple[Record, ...]


# ----------------------------------------------------------------- writing


class _Writer:
    def __init__(self, order: str) -> None:
        self.order = order
        self.parts: list[bytes] = []

    def pack(self, fmt: str, *values: int) -> bytes:
        try:
            return struct.pack(self.order + fmt, *values)
        except struct.error as error:
            raise MigrationError(f"value out of range for the stream: {values}") from error

    def record(self, type_: int, body: bytes) -> None:
        """``len`` counts the padding, as C writes it: C's readers step from
        record to record by ``len`` alone."""
        body += _pad(len(body))
        self.parts.append(self.pack("II", type_, len(body)) + body)


def _pad(length: int) -> bytes:
    return bytes(-length % 8)


def _nul(text: str) -> bytes:
    return text.encode("latin-1") + b"\0"


def _quota_items(hard: Mapping[str, int], soft: Mapping[str, int]) -> list[tuple[str, int]]:
    """C's order: each quota's hard value, then its soft one if it has one;
    names C does not know follow, so nothing set is lost."""
    items: list[tuple[str, int]] = []
    for name in QUOTA_NAMES:
        if name in hard:
            items.append((name, hard[name]))
        if name in soft:
            items.append((SOFT_PREFIX + name, soft[name]))
    items.extend((name, value) for name, value in hard.items() if name not in QUOTA_NAMES)
    items.extend(
        (SOFT_PREFIX + name, value) for name, value in soft.items() if name not in QUOTA_NAMES
    )
    return items


def _quota_body(w: _Writer, items: list[tuple[str, int]]) -> bytes:
    values = b"".join(w.pack("I", value) for _, value in items)
    return values + b"".join(_nul(name) for name, _ in items)


def _perm_bytes(w: _Writer, perms: Perms) -> bytes:
    return b"".join(
        w.pack(
            "BBH",
            _LETTERS[perm.flags & (READ | WRITE)],
            PERM_FLAG_IGNORE if perm.flags & IGNORE else 0,
            # C keeps 16 bits of the id here too (``domid`` is a u16).
            perm.domid & 0xFFFF,
        )
        for perm in perms
    )


def _node_record(
    w: _Writer, conn_id: int, tx_id: int, path: str, node: Node | None, access: int
) -> None:
    path_bytes = _nul(path)
    value = node.value if node is not None else b""
    perms = node.perms if node is not None else ()
    head = w.pack("IIHHHH", conn_id, tx_id, len(path_bytes), len(value), access, len(perms))
    w.record(NODE_DATA, head + _perm_bytes(w, perms) + path_bytes + value)


def _watch_path(watch: Watch) -> str:
    """The path as the client gave it: relative ones without the home prefix."""
    return watch.path[watch.prefix_len :] if watch.prefix_len else watch.path


def _connection_record(
    w: _Writer, engine: Engine, conn: Connection, fd: int, io: tuple[bytes, bytes]
) -> None:
    pending_in, partial_out = io
    out = partial_out + b"".join(
        _reorder(message.data, w.order) for message in conn.outbox.messages
    )
    if conn.is_socket:
        conn_type, spec = CONN_SOCKET, w.pack("iI", fd, 0)
    else:
        domain = engine.domains.get(conn.domid)
        port = domain.port if domain is not None else 0
        target = DOMID_INVALID if conn.target is None else conn.target
        conn_type, spec = CONN_RING, w.pack("HHI", conn.domid, target & 0xFFFF, port)
    lengths = w.pack("HHI", len(pending_in), len(partial_out), len(out))
    w.record(CONNECTION_DATA, w.pack("IHH", conn.conn_id, conn_type, 0) + spec + lengths
             + pending_in + out)


def _reorder(message: bytes, order: str) -> bytes:
    """A whole message with its header in the stream's byte order (the
    wire's is the host's, which is the stream's when C writes it)."""
    if order == _NATIVE:
        return message
    header = struct.unpack_from(_NATIVE + "IIII", message)
    return struct.pack(order + "IIII", *header) + message[HEADER_SIZE:]


def _watch_records(w: _Writer, conn: Connection, version: int) -> None:
    for watch in sorted(conn.watches.values(), key=lambda watch: watch.seq):
        path, token = _nul(_watch_path(watch)), _nul(watch.token)
        lengths = w.pack("IHH", conn.conn_id, len(path), len(token))
        # A depth C's u16 cannot hold, or a version 1 stream, widens the
        # watch to unlimited: more events, never fewer.
        if version >= 2 and 0 <= watch.depth < DEPTH_UNLIMITED:
            w.record(WATCH_DATA_EXTENDED, lengths + w.pack("HH", watch.depth, 0) + path + token)
        else:
            w.record(WATCH_DATA, lengths + path + token)


def _tx_extension(w: _Writer, tree: Tree, tx: TransactionView, flags: int) -> bytes:
    counts = w.pack("HHIII", EXT_VERSION, flags, tx.node_limit, len(tx.accessed),
                    len(tx.node_deltas))
    parts = [EXT_TAG, counts]
    parts.extend(w.pack("Ii", domid, delta) for domid, delta in tx.node_deltas.items())
    for path, generation in tx.accessed.items():
        committed = tree.nodes.get(path)
        current = committed.generation if committed is not None else NO_GENERATION
        node_flags = NODE_STALE if current != generation else 0
        event = tx.events.get(path)
        if event is not None:
            node_flags |= NODE_EVENT_SUBTREE if event == SUBTREE else NODE_EVENT_EXACT
        node = tx.nodes.get(path)
        listing = b""
        if node is not None:
            base = list(committed.children) if committed is not None else []
            if list(node.children) != base:
                node_flags |= NODE_CHILDREN
                listing = node.child_list()
                listing = w.pack("I", len(listing)) + listing
        parts.append(w.pack("B", node_flags) + listing)
    return b"".join(parts)


def _transaction_records(w: _Writer, tree: Tree, conn: Connection) -> None:
    for tx_id, tx in conn.transactions.items():
        flags = (TX_FAILED if tx.failed else 0) | (TX_CREATED_NODE if tx.created_node else 0)
        head = w.pack("II", conn.conn_id, tx_id)
        w.record(TRANSACTION_DATA, head + _tx_extension(w, tree, tx, flags))
        for path in tx.accessed:
            node = tx.nodes.get(path)
            if path not in tx.dirty:
                access = TA_READ
            else:
                access = TA_WRITTEN if node is not None else TA_DELETED
            _node_record(w, conn.conn_id, tx_id, path, node, access)
    for tx_id in sorted(conn.lost_transactions):
        ext = EXT_TAG + w.pack("HHIII", EXT_VERSION, TX_LOST, 0, 0, 0)
        w.record(TRANSACTION_DATA, w.pack("II", conn.conn_id, tx_id) + ext)


def _committed_nodes(tree: Tree) -> Iterator[tuple[str, Node]]:
    yield from tree.walk("/")
    for special in ("@releaseDomain", "@introduceDomain"):
        node = tree.get(special)
        if node is not None:
            yield special, node


def export(
    engine: Engine,
    *,
    version: int = 2,
    fds: Mapping[int, int] | None = None,
    transactions: bool = True,
    socket_fd: int = -1,
    evtchn_fd: int = -1,
    pending_io: Mapping[int, tuple[bytes, bytes]] | None = None,
    big_endian: bool = False,
) -> bytes:
    """The engine's whole state as a migration stream.

    ``fds`` gives socket connections' file descriptors by connection id
    (-1 for the others); ``socket_fd`` and ``evtchn_fd`` go into
    GLOBAL_DATA. ``pending_io`` gives, by connection id, what the shell
    holds: bytes read and not handled yet (a partial request), and the
    unsent tail of a message it began to send. ``transactions=False``
    leaves out open transactions, which C's readers cannot take;
    ``version=1`` is what C before 4.18 reads.
    """
    if version not in VERSIONS:
        raise MigrationError(f"unsupported stream version {version}")
    fds = fds or {}
    pending_io = pending_io or {}
    w = _Writer(">" if big_endian else "<")
    w.parts.append(IDENT + struct.pack(">II", version, 1 if big_endian else 0))
    w.record(GLOBAL_DATA, w.pack("ii", socket_fd, evtchn_fd))
    items = _quota_items(engine.config.hard_quotas, engine.config.soft_quotas)
    w.record(GLOBAL_QUOTA_DATA, w.pack("HH", len(items), 0) + _quota_body(w, items))
    connections = sorted(engine.connections.values(), key=lambda conn: conn.conn_id)
    for conn in connections:
        io = pending_io.get(conn.conn_id, (b"", b""))
        _connection_record(w, engine, conn, fds.get(conn.conn_id, -1), io)
        _watch_records(w, conn, version)
    for path, node in _committed_nodes(engine.tree):
        _node_record(w, 0, 0, path, node, 0)
    if transactions:
        for conn in connections:
            _transaction_records(w, engine.tree, conn)
    for domid in sorted(engine.domains.domains):
        domain = engine.domains.domains[domid]
        items = _quota_items(domain.hard_quotas, domain.soft_quotas)
        features = domain.features if version >= 2 else 0
        head = w.pack("HHI", domid, len(items), features)
        w.record(DOMAIN_DATA, head + _quota_body(w, items))
    w.record(END, b"")
    return b"".join(w.parts)


# ----------------------------------------------------------------- reading


class _Body:
    """Bounds-checked reads from one record's body."""

    def __init__(self, data: bytes, order: str, what: str) -> None:
        self.data = data
        self.order = order
        self.what = what
        self.offset = 0

    def fail(self, problem: str) -> MigrationError:
        return MigrationError(f"{self.what}: {problem}")

    def take(self, length: int) -> bytes:
        end = self.offset + length
        if length < 0 or end > len(self.data):
            raise self.fail(f"truncated (needs {end} bytes, has {len(self.data)})")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        layout = struct.Struct(self.order + fmt)
        values: tuple[int, ...] = layout.unpack(self.take(layout.size))
        return values

    def string(self, length: int, name: str) -> str:
        raw = self.take(length)
        if length < 1 or raw[-1] != 0 or 0 in raw[:-1]:
            raise self.fail(f"{name} is not one NUL-terminated string")
        return raw[:-1].decode("latin-1")

    def names(self, count: int) -> list[str]:
        rest = self.data[self.offset :]
        names = rest.split(b"\0")
        if len(names) <= count:
            raise self.fail(f"{count} quota names expected, {len(names) - 1} found")
        self.offset = len(self.data)
        return [name.decode("latin-1") for name in names[:count]]


def _parse_perms(body: _Body, count: int) -> Perms:
    perms = []
    for _ in range(count):
        letter, flags, domid = body.unpack("BBH")
        access = _FLAGS.get(letter)
        if access is None:
            raise body.fail(f"permission letter {letter:#x} is none of n, r, w, b")
        perms.append(Perm(access | (IGNORE if flags & PERM_FLAG_IGNORE else 0), domid))
    return tuple(perms)


def _parse_node(body: _Body) -> NodeData:
    conn_id, tx_id, path_len, value_len, access, count = body.unpack("IIHHHH")
    perms = _parse_perms(body, count)
    path = body.string(path_len, "path")
    value = body.take(value_len)
    return NodeData(conn_id, tx_id if conn_id else 0, path, value, access, perms)


def _parse_quotas(body: _Body, count: int) -> tuple[tuple[str, int], ...]:
    values = [body.unpack("I")[0] for _ in range(count)]
    return tuple(zip(body.names(count), values, strict=True))


def _split_messages(data: bytes, order: str, what: str) -> tuple[bytes, ...]:
    """Whole messages, their headers turned to this host's byte order."""
    messages = []
    offset = 0
    header = struct.Struct(order + "IIII")
    while offset < len(data):
        if offset + HEADER_SIZE > len(data):
            raise MigrationError(f"{what}: output data ends inside a message header")
        type_, req_id, tx_id, length = header.unpack_from(data, offset)
        end = offset + HEADER_SIZE + length
        if end > len(data):
            raise MigrationError(f"{what}: output data ends inside a message")
        native = struct.pack(_NATIVE + "IIII", type_, req_id, tx_id, length)
        messages.append(native + data[offset + HEADER_SIZE : end])
        offset = end
    return tuple(messages)


def _parse_connection(body: _Body) -> ConnectionData:
    conn_id, conn_type, fields = body.unpack("IHH")
    spec = body.take(8)
    in_len, resp_len, out_len = body.unpack("HHI")
    in_data = body.take(in_len)
    out_data = body.take(out_len)
    if conn_id == 0:
        raise body.fail("connection id 0")
    if resp_len > out_len:
        raise body.fail(f"partial response of {resp_len} bytes in {out_len} bytes of output")
    what = f"{body.what} {conn_id}"
    messages = _split_messages(out_data[resp_len:], body.order, what)
    unique_id = None
    if fields & FIELD_UNIQUE_ID:
        body.take(-body.offset % 8)
        unique_id = body.unpack("Q")[0]
    record = ConnectionData(
        conn_id,
        conn_type,
        fields,
        in_data=in_data,
        partial_out=out_data[:resp_len],
        messages=messages,
        unique_id=unique_id,
    )
    if conn_type == CONN_RING:
        domid, tdomid, evtchn = struct.unpack(body.order + "HHI", spec)
        return attrs.evolve(record, domid=domid, tdomid=tdomid, evtchn=evtchn)
    if conn_type == CONN_SOCKET:
        (fd,) = struct.unpack_from(body.order + "i", spec)
        return attrs.evolve(record, fd=fd)
    raise body.fail(f"unknown connection type {conn_type}")


def _parse_watch(body: _Body) -> WatchData:
    conn_id, path_len, token_len = body.unpack("IHH")
    path = body.string(path_len, "watch path")
    token = body.string(token_len, "watch token")
    return WatchData(conn_id, path, token)


def _parse_watch_extended(body: _Body) -> tuple[WatchData, int]:
    """The design's layout (depth at 8, the path at 12); failing that, what
    C's writer produces (the path at 8, no depth, the length declared 4
    bytes too long). Returns the record and the bytes it really takes."""
    conn_id, path_len, token_len = body.unpack("IHH")
    try:
        depth, pad = body.unpack("HH")
        if pad:
            raise body.fail("padding after the depth is not zero")
        path = body.string(path_len, "watch path")
        token = body.string(token_len, "watch token")
    except MigrationError as design_error:
        body.offset = 8
        try:
            path = body.string(path_len, "watch path")
            token = body.string(token_len, "watch token")
        except MigrationError:
            raise design_error from None
        watch = WatchData(conn_id, path, token, -1, extended=True, c_layout=True)
        return watch, body.offset
    depth = -1 if depth == DEPTH_UNLIMITED else depth
    return WatchData(conn_id, path, token, depth, extended=True), len(body.data)


def _parse_tx_extension(body: _Body) -> TxExtension | None:
    if body.data[body.offset : body.offset + 4] != EXT_TAG:
        return None
    body.take(4)
    ext_version, flags, node_limit, n_nodes, n_deltas = body.unpack("HHIII")
    if ext_version != EXT_VERSION:
        return None  # a later extension: read what the design defines only
    deltas = []
    for _ in range(n_deltas):
        domid, delta = body.unpack("Ii")
        deltas.append((domid, delta))
    nodes = []
    for _ in range(n_nodes):
        (node_flags,) = body.unpack("B")
        event = None
        if node_flags & NODE_EVENT_SUBTREE:
            event = SUBTREE
        elif node_flags & NODE_EVENT_EXACT:
            event = EXACT
        children = None
        if node_flags & NODE_CHILDREN:
            (length,) = body.unpack("I")
            listing = body.take(length)
            if listing and listing[-1] != 0:
                raise body.fail("child list is not NUL-terminated")
            children = tuple(name.decode("latin-1") for name in listing.split(b"\0")[:-1])
            if len(set(children)) != len(children) or any(
                not name or "/" in name for name in children
            ):
                raise body.fail("child list has an empty, repeated or bad name")
        nodes.append(TxNodeExtra(bool(node_flags & NODE_STALE), event, children))
    return TxExtension(flags, node_limit, tuple(deltas), tuple(nodes))


def _parse_transaction(body: _Body) -> TransactionData:
    conn_id, tx_id = body.unpack("II")
    if tx_id == 0:
        raise body.fail("transaction id 0")
    return TransactionData(conn_id, tx_id, _parse_tx_extension(body))


def _parse_record(type_: int, body: _Body) -> Record:
    if type_ == GLOBAL_DATA:
        socket_fd, evtchn_fd = body.unpack("ii")
        return GlobalData(socket_fd, evtchn_fd)
    if type_ == CONNECTION_DATA:
        return _parse_connection(body)
    if type_ == WATCH_DATA:
        return _parse_watch(body)
    if type_ == TRANSACTION_DATA:
        return _parse_transaction(body)
    if type_ == NODE_DATA:
        return _parse_node(body)
    if type_ == GLOBAL_QUOTA_DATA:
        n_dom, n_glob = body.unpack("HH")
        return QuotaData(None, _parse_quotas(body, n_dom + n_glob), n_dom=n_dom)
    if type_ == DOMAIN_DATA:
        domid, count, features = body.unpack("HHI")
        return QuotaData(domid, _parse_quotas(body, count), features)
    return UnknownRecord(type_, body.data)


def parse(data: bytes) -> Stream:
    """Split and decode a stream; MigrationError if it is malformed."""
    if len(data) < 16:
        raise MigrationError(f"stream of {len(data)} bytes has no preamble")
    if data[:8] != IDENT:
        raise MigrationError(f"bad ident {data[:8]!r}, expected {IDENT!r}")
    version, flags = struct.unpack_from(">II", data, 8)
    if version not in VERSIONS:
        raise MigrationError(f"unsupported stream version {version}")
    if flags & ~1:
        raise MigrationError(f"reserved preamble flags set: {flags:#x}")
    order = ">" if flags & 1 else "<"
    records: list[Record] = []
    offset = 16
    while True:
        if offset + 8 > len(data):
            raise MigrationError(f"stream ends at offset {len(data)} without an END record")
        type_, length = struct.unpack_from(order + "II", data, offset)
        name = RECORD_NAMES.get(type_, f"record type {type_}")
        start = offset + 8
        if type_ == END:
            break
        if type_ == WATCH_DATA_EXTENDED:
            # C's writer may declare more than it wrote: decode from what is
            # there, and move on by what the record really took.
            available = data[start : start + length]
            body = _Body(available, order, f"{name} at offset {offset}")
            watch, used = _parse_watch_extended(body)
            if not watch.c_layout and start + length > len(data):
                raise body.fail(f"truncated ({length} bytes declared, {len(data) - start} left)")
            records.append(watch)
            offset = start + used + (-used % 8)
            continue
        if start + length > len(data):
            raise MigrationError(
                f"{name} at offset {offset}: truncated ({length} bytes declared,"
                f" {len(data) - start} left)"
            )
        body = _Body(data[start : start + length], order, f"{name} at offset {offset}")
        try:
            records.append(_parse_record(type_, body))
        except struct.error as error:  # pragma: no cover - every read is bounds-checked
            raise body.fail(str(error)) from error
        offset = start + length + (-length % 8)
    return Stream(version, order == ">", tuple(records))


# ----------------------------------------------------------------- importing


@attrs.frozen
class RingImport:
    """A ring connection rebuilt in the engine, and what the shell must finish."""

    conn_id: int
    stream_conn_id: int
    domid: int
    #: The event channel port from the stream (C writes its own local port).
    evtchn: int
    #: Requests read and not processed by the writer; the last may be partial.
    pending_input: bytes
    #: The tail of a message the writer had partly written: send it first.
    partial_output: bytes
    unique_id: int | None


@attrs.frozen
class SocketImport:
    """A socket connection: only its owner, with the fd, can rebuild it."""

    stream_conn_id: int
    fd: int
    #: (path as given to WATCH, token, depth) in registration order.
    watches: tuple[tuple[str, str, int], ...]
    pending_input: bytes
    partial_output: bytes
    #: Whole messages queued for it.
    messages: tuple[bytes, ...]
    transactions: tuple[int, ...]


@attrs.frozen
class ImportResult:
    version: int
    socket_fd: int | None
    evtchn_fd: int | None
    rings: tuple[RingImport, ...]
    sockets: tuple[SocketImport, ...]
    nodes: int
    watches: int
    transactions: int
    #: Domain records made for DOMAIN_DATA of a domain the stream had not
    #: named before (C's reader aborts there, spec 8.3 [BUG?]).
    created_domains: tuple[int, ...]
    #: Record types skipped because unknown.
    skipped: tuple[int, ...]
    #: Anything read with a loss, in words.
    notes: tuple[str, ...]


@attrs.define
class _ConnPlan:
    record: ConnectionData
    watches: list[WatchData] = attrs.field(factory=list)
    #: tx id -> (the record, its pending nodes)
    transactions: dict[int, tuple[TransactionData, list[NodeData]]] = attrs.field(factory=dict)
    watch_keys: set[tuple[str, str]] = attrs.field(factory=set)
    #: Built by ``_Builder.build_transactions`` (ring connections only).
    views: list[TransactionView] = attrs.field(factory=list)
    lost: set[int] = attrs.field(factory=set)


def _copy_domain(domain: Domain) -> Domain:
    return attrs.evolve(
        domain, hard_quotas=dict(domain.hard_quotas), soft_quotas=dict(domain.soft_quotas)
    )


def _valid_node_path(path: str) -> bool:
    if path[:1] != "/" and path not in ("@releaseDomain", "@introduceDomain"):
        return False
    try:
        canonicalize(path, 0, allow_special=True)
    except XenstoreError:
        return False
    return True


class _Builder:
    """The state a stream describes, built aside so a bad stream changes nothing."""

    def __init__(self, engine: Engine, stream: Stream) -> None:
        self.engine = engine
        self.stream = stream
        self.hard = dict(engine.config.hard_quotas)
        self.soft = dict(engine.config.soft_quotas)
        self.global_quotas = False
        self.domains = {domid: _copy_domain(d) for domid, d in engine.domains.domains.items()}
        self.domain_data: set[int] = set()
        self.created: list[int] = []
        self.conns: dict[int, _ConnPlan] = {}
        self.ring_domids: set[int] = set()
        self.global_data: GlobalData | None = None
        self.skipped: list[int] = []
        self.notes: list[str] = []
        self.tree = Tree()
        self.committed = 0
        self.seen: set[str] = set()
        old = engine.tree
        # C starts a live update with ``/`` alone; the special nodes keep
        # their defaults unless the stream has them.
        for path in ("/", "@releaseDomain", "@introduceDomain"):
            node = old.get(path)
            if node is not None:
                self.tree.nodes[path] = Node(node.value, node.perms, node.generation)

    # -- records

    def add(self, record: Record) -> None:
        if isinstance(record, NodeData):
            self.node(record)
        elif isinstance(record, WatchData):
            self.watch(record)
        elif isinstance(record, ConnectionData):
            self.connection(record)
        elif isinstance(record, TransactionData):
            self.transaction(record)
        elif isinstance(record, QuotaData):
            if record.domid is None:
                self.global_quota(record)
            else:
                self.domain(record)
        elif isinstance(record, GlobalData):
            if self.global_data is not None:
                raise MigrationError("a second GLOBAL_DATA record")
            self.global_data = record
        else:
            self.skipped.append(record.type)

    def node(self, record: NodeData) -> None:
        path = record.path
        if not _valid_node_path(path):
            raise MigrationError(f"NODE_DATA: invalid path {path!r}")
        if record.conn_id:
            self.pending_node(record)
            return
        if not record.perms:
            raise MigrationError(f"NODE_DATA {path}: no permissions (no owner)")
        if path in self.seen:
            raise MigrationError(f"NODE_DATA {path}: a second record for the node")
        self.seen.add(path)
        self.committed += 1
        node = Node(record.value, record.perms, self.committed)
        nodes = self.tree.nodes
        if path[0] == "/" and path != "/":
            parent = nodes.get(parent_of(path))
            if parent is None:
                raise MigrationError(f"NODE_DATA {path}: parent {parent_of(path)} not known")
            parent.add_child(basename(path))
        elif path == "/":
            # Children already restored stay (C would lose them here).
            root = nodes["/"]
            node.children, node.childlen = root.children, root.childlen
        nodes[path] = node

    def pending_node(self, record: NodeData) -> None:
        plan = self.conns.get(record.conn_id)
        entry = plan.transactions.get(record.tx_id) if plan is not None else None
        if entry is None:
            raise MigrationError(
                f"NODE_DATA {record.path}: transaction {record.tx_id} of connection"
                f" {record.conn_id} not known"
            )
        if any(node.path == record.path for node in entry[1]):
            raise MigrationError(f"NODE_DATA {record.path}: twice in transaction {record.tx_id}")
        if record.access == TA_DELETED and record.perms:
            raise MigrationError(f"NODE_DATA {record.path}: deleted, but has permissions")
        entry[1].append(record)

    def connection(self, record: ConnectionData) -> None:
        if record.conn_id in self.conns:
            raise MigrationError(f"CONNECTION_DATA: connection id {record.conn_id} twice")
        if record.conn_type == CONN_RING:
            if record.domid in self.ring_domids:
                raise MigrationError(f"CONNECTION_DATA: two rings for domain {record.domid}")
            self.ring_domids.add(record.domid)
            domain = self.domains.get(record.domid)
            if domain is None:
                domain = self.domains[record.domid] = self.new_domain(record.domid)
            domain.introduced = True
            domain.port = record.evtchn
        self.conns[record.conn_id] = _ConnPlan(record)

    def new_domain(self, domid: int) -> Domain:
        return Domain(domid, dict(self.hard), dict(self.soft))

    def watch(self, record: WatchData) -> None:
        plan = self.conns.get(record.conn_id)
        if plan is None:
            raise MigrationError(f"watch {record.path!r}: connection {record.conn_id} not known")
        conn = plan.record
        domid = conn.domid if conn.conn_type == CONN_RING else self.engine.config.store_domid
        try:
            path = canonicalize(record.path, domid, allow_special=True)
        except XenstoreError:
            raise MigrationError(f"watch: invalid path {record.path!r}") from None
        if (path, record.token) in plan.watch_keys:
            raise MigrationError(f"watch {record.path!r} {record.token!r} twice")
        plan.watch_keys.add((path, record.token))
        plan.watches.append(record)
        if record.c_layout:
            self.notes.append(
                f"watch {record.path!r} {record.token!r} of connection {record.conn_id}:"
                " WATCH_DATA_EXTENDED in C's layout has no depth; restored unlimited"
            )

    def transaction(self, record: TransactionData) -> None:
        plan = self.conns.get(record.conn_id)
        if plan is None:
            raise MigrationError(
                f"transaction {record.tx_id}: connection {record.conn_id} not known"
            )
        if record.tx_id in plan.transactions:
            raise MigrationError(f"transaction {record.tx_id} twice")
        plan.transactions[record.tx_id] = (record, [])

    def global_quota(self, record: QuotaData) -> None:
        if self.global_quotas:
            raise MigrationError("a second GLOBAL_QUOTA_DATA record")
        self.global_quotas = True
        self.hard, self.soft = self.quota_tables(record, dict(self.hard))

    def quota_tables(
        self, record: QuotaData, hard: dict[str, int]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Hard values update the defaults (C ``parse_quota_data``); the soft
        ones replace them, since a writer names exactly the enabled ones."""
        soft: dict[str, int] = {}
        for name, value in record.quotas:
            if name.startswith(SOFT_PREFIX) and name[len(SOFT_PREFIX) :] in QUOTA_NAMES:
                soft[name[len(SOFT_PREFIX) :]] = value
            elif name in QUOTA_NAMES:
                hard[name] = value
            else:
                self.notes.append(f"quota {name!r} unknown, ignored")
        return hard, soft

    def domain(self, record: QuotaData) -> None:
        assert record.domid is not None
        domid = record.domid
        if domid in self.domain_data:
            raise MigrationError(f"DOMAIN_DATA for domain {domid} twice")
        self.domain_data.add(domid)
        domain = self.domains.get(domid)
        if domain is None:
            # C aborts here (spec 8.3 [BUG?]); the record is kept instead.
            domain = self.domains[domid] = self.new_domain(domid)
            self.created.append(domid)
        domain.hard_quotas, domain.soft_quotas = self.quota_tables(
            record, dict(domain.hard_quotas)
        )
        if self.stream.version >= 2:
            domain.features = record.features

    # -- the whole

    def finish_tree(self) -> None:
        tree = self.tree
        old = self.engine.tree
        tree.changes = None if old.changes is None else []
        tree.generation = max(
            [self.committed, *(node.generation for node in tree.nodes.values())]
        )
        charge = tree.accounting.charge
        for path, node in tree.nodes.items():
            charge(owner(node.perms), 1, footprint(path, node))
        # Counters of connections the new engine already had.
        for domid, usage in old.accounting.usage.items():
            if usage.watches or usage.transactions:
                tree.accounting.of(domid).watches += usage.watches
                tree.accounting.of(domid).transactions += usage.transactions

    def finish(self) -> None:
        """Everything that can find the stream wrong, before the engine changes."""
        self.finish_tree()
        self.build_transactions()

    def apply(self, now: float) -> ImportResult:
        engine = self.engine
        engine.tree = self.tree
        if self.global_quotas:
            engine.config.hard_quotas.clear()
            engine.config.hard_quotas.update(self.hard)
            engine.config.soft_quotas.clear()
            engine.config.soft_quotas.update(self.soft)
            engine.globals_touched = True
        engine.domains.domains.clear()
        engine.domains.domains.update(self.domains)
        engine.touched_domains.update(self.domain_data)
        rings: list[RingImport] = []
        sockets: list[SocketImport] = []
        watches = transactions = 0
        for plan in self.conns.values():
            record = plan.record
            if record.conn_type == CONN_SOCKET:
                sockets.append(self.socket_result(plan))
                continue
            conn = self.ring(plan, now)
            watches += len(plan.watches)
            transactions += len(plan.transactions)
            rings.append(
                RingImport(
                    conn.conn_id,
                    record.conn_id,
                    record.domid,
                    record.evtchn,
                    record.in_data,
                    record.partial_out,
                    record.unique_id,
                )
            )
        glob = self.global_data
        return ImportResult(
            version=self.stream.version,
            socket_fd=glob.socket_fd if glob is not None else None,
            evtchn_fd=glob.evtchn_fd if glob is not None else None,
            rings=tuple(rings),
            sockets=tuple(sockets),
            nodes=self.committed,
            watches=watches,
            transactions=transactions,
            created_domains=tuple(self.created),
            skipped=tuple(self.skipped),
            notes=tuple(self.notes),
        )

    def socket_result(self, plan: _ConnPlan) -> SocketImport:
        record = plan.record
        if plan.transactions:
            self.notes.append(
                f"socket connection {record.conn_id}: its open transactions are reported only"
            )
        return SocketImport(
            record.conn_id,
            record.fd,
            tuple((w.path, w.token, w.depth) for w in plan.watches),
            record.in_data,
            record.partial_out,
            record.messages,
            tuple(plan.transactions),
        )

    def ring(self, plan: _ConnPlan, now: float) -> Connection:
        engine = self.engine
        record = plan.record
        domid = record.domid
        conn_id = engine.restore_connection(domid, domid == engine.config.priv_domid)
        conn = engine.connections[conn_id]
        domain = engine.domains.domains[domid]
        domain.conn_id = conn_id
        if record.tdomid != DOMID_INVALID:
            conn.target = record.tdomid
        for message in record.messages:
            _queue(conn, message, now)
        home = len(domain_path(domid)) + 1
        for watch in plan.watches:
            relative = watch.path[:1] not in ("/", "@")
            path = canonicalize(watch.path, domid, allow_special=True)
            engine.restore_watch(
                conn, Watch(conn_id, path, watch.token, watch.depth, home if relative else 0)
            )
        for tx in plan.views:
            conn.transactions[tx.tx_id] = tx
            engine.tree.accounting.of(domid).transactions += 1
            engine.write_rate.transactions += 1
        conn.lost_transactions.update(plan.lost)
        conn.last_tx_id = max((*plan.transactions, 0))
        if domid != engine.config.priv_domid:
            engine.emit(AttachRing(domid, conn_id, domain.port))
        return conn

    def build_transactions(self) -> None:
        """The ring connections' transactions, against the finished tree."""
        for plan in self.conns.values():
            if plan.record.conn_type != CONN_RING:
                continue
            for record, pending in plan.transactions.values():
                ext = record.extension
                if ext is not None and ext.flags & TX_LOST:
                    plan.lost.add(record.tx_id)
                else:
                    plan.views.append(self.transaction_view(plan.record, record, pending))

    def transaction_view(
        self, conn: ConnectionData, record: TransactionData, pending: list[NodeData]
    ) -> TransactionView:
        ext = record.extension
        extras: Iterable[TxNodeExtra | None] = (
            ext.nodes if ext is not None and len(ext.nodes) == len(pending) else ()
        )
        tree = self.tree
        if ext is not None:
            limit = ext.node_limit
        elif conn.domid == self.engine.config.priv_domid:
            limit = 0
        else:
            limit = self.domains[conn.domid].hard_quotas.get("transaction-nodes", 0)
        tx = TransactionView(tree, record.tx_id, limit)
        listed = dict(zip((node.path for node in pending), extras, strict=False))
        for node_record in pending:
            path = node_record.path
            extra = listed.get(path)
            committed = tree.nodes.get(path)
            if extra is not None and extra.stale:
                tx.accessed[path] = STALE_GENERATION
            else:
                tx.accessed[path] = committed.generation if committed else NO_GENERATION
            if node_record.perms:
                generation = committed.generation if committed is not None else NO_GENERATION
                node: Node | None = Node(node_record.value, node_record.perms, generation)
            else:
                node = None
            tx.nodes[path] = node
            if node_record.access & TA_WRITTEN or node_record.access == TA_DELETED:
                tx.dirty[path] = None
            if extra is not None and extra.event is not None:
                tx.events[path] = extra.event
            elif extra is None and path in tx.dirty:
                tx.events[path] = SUBTREE
        for path, node in tx.nodes.items():
            if node is None:
                continue
            extra = listed.get(path)
            if extra is not None and extra.children is not None:
                children: Iterable[str] = extra.children
            elif extra is not None:
                committed = tree.nodes.get(path)
                children = committed.children if committed is not None else ()
            else:
                children = _derived_children(tree, tx, path)
            for name in children:
                node.add_child(name)
        if ext is not None:
            tx.node_deltas = dict(ext.deltas)
            tx.failed = bool(ext.flags & TX_FAILED)
            tx.created_node = bool(ext.flags & TX_CREATED_NODE)
        else:
            _derive_counts(tree, tx)
        if not tx.conflicts():
            problem = _tree_problem(tree, tx)
            if problem is not None:
                raise MigrationError(
                    f"transaction {record.tx_id} of connection {conn.conn_id}: {problem}"
                )
        return tx


def _derived_children(tree: Tree, tx: TransactionView, path: str) -> list[str]:
    """A foreign writer's transaction node: the committed child list, less
    the children the transaction removed, plus those it added."""
    committed = tree.nodes.get(path)
    prefix = "" if path == "/" else path
    children = [
        name for name in (committed.children if committed is not None else ())
        if tx.nodes.get(f"{prefix}/{name}", True) is not None
    ]
    for child, node in tx.nodes.items():
        if node is not None and child != path and child[0] == "/" and parent_of(child) == path:
            if basename(child) not in children:
                children.append(basename(child))
    return children


def _tree_problem(tree: Tree, tx: TransactionView) -> str | None:
    """Why committing ``tx`` would leave the tree unsound, if it would: each
    directory whose children the commit touches must list exactly the
    children that exist after it, and each node it installs needs a parent."""
    dirty = [path for path in tx.dirty if path in tx.nodes]

    def after(path: str) -> Node | None:
        return tx.nodes[path] if path in tx.dirty else tree.nodes.get(path)

    below: dict[str, set[str]] = {}
    for path in dirty:
        if path[0] == "/" and path != "/":
            below.setdefault(parent_of(path), set()).add(basename(path))
    for path in dirty:
        if tx.nodes[path] is not None:
            below.setdefault(path, set())
    for parent, touched in below.items():
        node = after(parent)
        prefix = "" if parent == "/" else parent
        committed = tree.nodes.get(parent)
        names = touched | (set(committed.children) if committed is not None else set())
        present = {name for name in names if after(f"{prefix}/{name}") is not None}
        if node is None:
            if present:
                return f"{parent} would be gone with children left"
        elif set(node.children) != present:
            return f"the children of {parent} would not match the nodes"
    return None


def _derive_counts(tree: Tree, tx: TransactionView) -> None:
    """Node count deltas per owner and whether a node was created, from the
    committed tree and the transaction's final nodes."""
    for path in tx.dirty:
        committed = tree.nodes.get(path)
        final = tx.nodes.get(path)
        if committed is not None:
            domid = owner(committed.perms)
            tx.node_deltas[domid] = tx.node_deltas.get(domid, 0) - 1
        if final is not None:
            domid = owner(final.perms)
            tx.node_deltas[domid] = tx.node_deltas.get(domid, 0) + 1
            if committed is None:
                tx.created_node = True


def _queue(conn: Connection, message: bytes, now: float) -> None:
    """Queue a message as the engine would have: an event (collapsible,
    expirable) when it is a plain WATCH_EVENT, else as a reply."""
    type_, req_id, tx_id, _ = struct.unpack_from(_NATIVE + "IIII", message)
    payload = message[HEADER_SIZE:]
    parts = payload.split(b"\0")
    if type_ == Op.WATCH_EVENT and not req_id and not tx_id and len(parts) == 3 and not parts[2]:
        path, token = (part.decode("latin-1") for part in parts[:2])
        conn.outbox.event(path, token, now)
    else:
        conn.outbox.reply(message, now)


def import_stream(data: bytes, engine: Engine, *, now: float = 0.0) -> ImportResult:
    """Build the state of ``data`` into a newly made engine.

    ``now`` (the shell's clock) stamps the restored output for the expiry
    of watch events. The engine is left unchanged when the stream is
    malformed (MigrationError). Each restored watch fires once, as after
    any restart (``Engine.restore_watch``), after the restored output.
    """
    stream = parse(data)
    builder = _Builder(engine, stream)
    for record in stream.records:
        builder.add(record)
    builder.finish()
    return builder.apply(now)


# ---------------------------------------------------------------- describing


def _short(data: bytes, limit: int = 60) -> str:
    text = repr(data[:limit])
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")


def _perm_text(perms: Perms) -> str:
    letters = {0: "n", READ: "r", WRITE: "w", READ | WRITE: "b"}
    return ",".join(
        f"{letters[p.flags & (READ | WRITE)]}{p.domid}{'!' if p.flags & IGNORE else ''}"
        for p in perms
    )


def describe(record: Record) -> str:
    """One line for ``pyxenstored-state dump``."""
    if isinstance(record, GlobalData):
        return f"GLOBAL_DATA socket-fd={record.socket_fd} evtchn-fd={record.evtchn_fd}"
    if isinstance(record, QuotaData):
        quotas = " ".join(f"{name}={value}" for name, value in record.quotas)
        if record.domid is None:
            return f"GLOBAL_QUOTA_DATA {quotas}"
        return f"DOMAIN_DATA domid={record.domid} features={record.features:#x} {quotas}"
    if isinstance(record, ConnectionData):
        if record.conn_type == CONN_RING:
            target = "-" if record.tdomid == DOMID_INVALID else str(record.tdomid)
            spec = f"ring domid={record.domid} target={target} evtchn={record.evtchn}"
        else:
            spec = f"socket fd={record.fd}"
        line = f"CONNECTION_DATA conn={record.conn_id} {spec}"
        if record.unique_id is not None:
            line += f" unique-id={record.unique_id:#x}"
        if record.in_data:
            line += f" in={_short(record.in_data)}"
        if record.partial_out:
            line += f" partial-out={_short(record.partial_out)}"
        for message in record.messages:
            type_, req_id, tx_id, _ = struct.unpack_from(_NATIVE + "IIII", message)
            try:
                name = Op(type_).name
            except ValueError:
                name = str(type_)
            line += f"\n    out {name} req={req_id} tx={tx_id} {_short(message[HEADER_SIZE:])}"
        return line
    if isinstance(record, WatchData):
        name = "WATCH_DATA_EXTENDED" if record.extended else "WATCH_DATA"
        depth = "" if not record.extended else f" depth={record.depth}"
        layout = " (C layout: depth lost)" if record.c_layout else ""
        return f"{name} conn={record.conn_id} path={record.path!r} token={record.token!r}" + (
            depth + layout
        )
    if isinstance(record, TransactionData):
        line = f"TRANSACTION_DATA conn={record.conn_id} tx={record.tx_id}"
        ext = record.extension
        if ext is not None:
            flags = [name for bit, name in ((TX_FAILED, "failed"), (TX_CREATED_NODE, "created"),
                                            (TX_LOST, "lost")) if ext.flags & bit]
            line += f" pyxs[flags={','.join(flags) or '-'} deltas={dict(ext.deltas)}]"
        return line
    if isinstance(record, NodeData):
        where = "" if not record.conn_id else f" conn={record.conn_id} tx={record.tx_id}"
        access = ""
        if record.conn_id:
            access = " access=" + (
                {TA_DELETED: "deleted", TA_READ: "read", TA_WRITTEN: "written"}.get(
                    record.access, f"{record.access:#x}"
                )
            )
        return (
            f"NODE_DATA{where} {record.path} perms={_perm_text(record.perms) or '-'}{access}"
            f" value={_short(record.value)}"
        )
    return f"record type {record.type} ({len(record.body)} bytes, unknown)"
