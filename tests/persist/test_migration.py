"""The Xen migration stream (issue 6 item 4): export, import, C 4.17's dump, bad streams."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from engine_harness import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxenstored.config import QUOTA_NAMES, SUPPORTED_FEATURES
from pyxenstored.effects import AttachRing
from pyxenstored.engine import Engine
from pyxenstored.engine.connection import Connection
from pyxenstored.persist import files, image, migration, state_tool
from pyxenstored.protocol.ops import Op
from pyxenstored.store.node import NO_GENERATION, Node
from pyxenstored.store.permissions import IGNORE, READ, WRITE, Perm
from pyxenstored.store.tree import Tree
from pyxenstored.transactions import TransactionView

DATA = Path(__file__).resolve().parent / "data"
C417_DUMP = DATA / "c417_state_dump.bin"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_c417_dump", DATA / "make_c417_dump.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------ comparing states


def _content(node: Node | None) -> tuple[bytes, tuple[Perm, ...], tuple[str, ...]] | None:
    if node is None:
        return None
    return node.value, node.perms, tuple(node.children)


def _tx_state(tree: Tree, tx: TransactionView) -> dict[str, Any]:
    def stale(path: str) -> bool:
        committed = tree.nodes.get(path)
        return tx.accessed[path] != (committed.generation if committed else NO_GENERATION)

    return {
        "nodes": [(path, stale(path), _content(tx.nodes.get(path))) for path in tx.accessed],
        "dirty": set(tx.dirty),
        "events": dict(tx.events),
        "deltas": dict(tx.node_deltas),
        "created": tx.created_node,
        "failed": tx.failed,
        "conflicts": tx.conflicts(),
        "limit": tx.node_limit,
    }


def _conn_state(engine: Engine, conn: Connection) -> dict[str, Any]:
    return {
        "privileged": conn.privileged,
        "target": conn.target,
        "watches": [
            (w.path, w.token, w.depth, w.prefix_len)
            for w in sorted(conn.watches.values(), key=lambda w: w.seq)
        ],
        "transactions": {
            tx_id: _tx_state(engine.tree, tx) for tx_id, tx in conn.transactions.items()
        },
        "lost": sorted(conn.lost_transactions),
    }


def state(engine: Engine) -> dict[str, Any]:
    """Everything the stream carries, without generations and connection ids."""
    domains = {}
    for domid, domain in engine.domains.domains.items():
        conn = engine.connections.get(domain.conn_id) if domain.conn_id is not None else None
        domains[domid] = {
            "hard": domain.hard_quotas,
            "soft": domain.soft_quotas,
            "features": domain.features,
            "introduced": domain.introduced,
            "port": domain.port,
            "conn": None if conn is None else _conn_state(engine, conn),
        }
    return {
        "nodes": {path: _content(node) for path, node in engine.tree.nodes.items()},
        "quotas": (engine.config.hard_quotas, engine.config.soft_quotas),
        "domains": domains,
    }


def comparable_snapshot(engine: Engine) -> dict[str, Any]:
    """``image.snapshot`` less what the stream renumbers or does not carry."""
    snap = image.snapshot(engine)
    nodes = {path: [value, perms, children] for path, value, perms, _, children in snap["nodes"]}
    for record in snap["domains"]:
        del record["shutdown_reported"]
        if record["conn"] is not None:
            for key in ("order", "last_tx_id", "ignored"):
                del record["conn"][key]
    return {"nodes": nodes, "quotas": snap["quotas"], "domains": snap["domains"]}


def queued(engine: Engine, domid: int) -> list[bytes]:
    domain = engine.domains.get(domid)
    assert domain is not None and domain.conn_id is not None
    return [message.data for message in engine.connections[domain.conn_id].outbox.messages]


def socket_state(engine: Engine) -> list[tuple[Any, ...]]:
    result = []
    for conn in sorted(engine.connections.values(), key=lambda c: c.conn_id):
        if conn.is_socket:
            watches = tuple(
                (w.path[w.prefix_len :] if w.prefix_len else w.path, w.token, w.depth)
                for w in sorted(conn.watches.values(), key=lambda w: w.seq)
            )
            messages = tuple(m.data for m in conn.outbox.messages)
            result.append((watches, messages, tuple(conn.transactions)))
    return result


def ring_domids(engine: Engine) -> list[int]:
    return sorted(
        domid
        for domid, domain in engine.domains.domains.items()
        if domain.conn_id is not None and domain.conn_id in engine.connections
    )


def imported(data: bytes) -> tuple[Harness, migration.ImportResult]:
    fresh = Harness()
    return fresh, migration.import_stream(data, fresh.engine)


def assert_same(original: Engine, copy: Engine, result: migration.ImportResult) -> None:
    assert state(copy) == state(original)
    assert comparable_snapshot(copy) == comparable_snapshot(original)
    for domid in ring_domids(original):
        before = queued(original, domid)
        assert queued(copy, domid)[: len(before)] == before
    sockets = socket_state(original)
    # The fresh harness's own dom0 socket is not in the stream.
    assert [
        (sock.watches, sock.messages, sock.transactions) for sock in result.sockets
    ] == sockets


# ---------------------------------------------------------------- the scene


def guest_scene(h: Harness) -> tuple[int, int]:
    """Guests 5 and 6 with homes, watches of all kinds and queued events."""
    for domid in (5, 6):
        h.write_ok(h.dom0, f"/local/domain/{domid}")
        h.set_perms(h.dom0, f"/local/domain/{domid}", f"n{domid}", "r0")
    g5 = h.introduce(5, port=9)
    g6 = h.introduce(6, port=10)
    h.write_ok(g5, "data/a", b"1")
    h.watch(g5, "data", "rel")
    h.watch(g5, "/local/domain/5/deep", "abs", "2")
    h.watch(g5, "@releaseDomain", "rd")
    h.watch(g6, "@introduceDomain", "intro", "1")
    return g5, g6


def rich_scene() -> Harness:
    h = Harness()
    g5, g6 = guest_scene(h)
    h.write_ok(h.dom0, "/vm/b", b"\x00\x01binary\xff")
    h.set_perms(h.dom0, "/vm/b", "n0", "r5", "w6", "b8")
    h.set_quota(5, "nodes", 77)
    h.set_quota(8, "soft-memory", 1234)
    h.ok(h.dom0, Op.SET_QUOTA, "watches", "50")
    h.ok(h.dom0, Op.SET_FEATURE, "9", "2")
    h.watch(h.dom0, "/vm", "sock")
    tx = h.start(g5)
    h.write_ok(g5, "data/b", b"2", tx=tx)
    h.request(g5, Op.RM, "data/a", tx=tx)
    h.read(g5, "data", tx=tx)
    h.request(g5, Op.READ, "data/missing", tx=tx)
    h.write_ok(h.dom0, "/local/domain/5/data/c", b"3")  # queued for g5; makes tx stale
    tx6 = h.start(g6)
    h.write_ok(g6, "new", b"n", tx=tx6)
    h.ok(h.dom0, Op.SET_TARGET, "6", "5")
    return h


# ---------------------------------------------------------------- round trips


def test_round_trip_of_a_rich_state() -> None:
    h = rich_scene()
    data = migration.export(h.engine, fds={h.dom0: 17}, socket_fd=4, evtchn_fd=7)
    fresh, result = imported(data)
    assert_same(h.engine, fresh.engine, result)
    assert fresh.consistent() == []
    assert (result.socket_fd, result.evtchn_fd) == (4, 7)
    assert [sock.fd for sock in result.sockets] == [17]
    assert result.watches == 4 and result.transactions == 2
    # Records only a quota or feature made: DOMAIN_DATA alone names them.
    assert result.created_domains == (8, 9) and result.notes == ()
    # Rings are attached by the shell, as after any restart.
    effects = fresh.engine.take_effects()
    for ring in result.rings:
        assert AttachRing(ring.domid, ring.conn_id, ring.evtchn) in effects
    # Generations are renumbered in stream order, as C does.
    walk = [path for path, _ in fresh.engine.tree.walk("/")]
    assert [fresh.engine.tree.nodes[path].generation for path in walk] == list(
        range(1, len(walk) + 1)
    )
    assert fresh.engine.tree.generation == len(fresh.engine.tree.nodes)


def test_after_import_the_engines_behave_alike() -> None:
    h = rich_scene()
    fresh, _ = imported(migration.export(h.engine))
    assert_behave_alike(h, fresh)


def assert_behave_alike(h: Harness, fresh: Harness) -> None:
    """Commit every open ring transaction, then change nodes: the same
    replies, the same tree and the same watch events in both.

    The stream carries no replay recording (see
    ``test_a_migrated_transaction_is_not_replayable``), so the original's
    transactions are compared as not replayable either.
    """
    for engine in (h.engine, fresh.engine):
        for conn in engine.connections.values():
            engine.take_output(conn.conn_id)
            for tx in conn.transactions.values():
                tx.recording = None
    for conn in list(h.engine.connections.values()):
        if conn.is_socket:
            for tx_id in list(conn.transactions):
                h.end(conn.conn_id, tx_id, commit=False)
    for domid in ring_domids(h.engine):
        old = h.engine.domains.domains[domid].conn_id
        new = fresh.engine.domains.domains[domid].conn_id
        assert old is not None and new is not None
        for tx_id in list(h.engine.connections[old].transactions):
            assert fresh.end(new, tx_id) == h.end(old, tx_id)
    for harness in (h, fresh):
        harness.write(harness.dom0, "/a/b", b"x")
        harness.write(harness.dom0, "/local/domain/5/data/deep", b"y")
        harness.write(harness.dom0, "/local/domain/5/deep/a/b", b"z")
        harness.request(harness.dom0, Op.RM, "/local/domain/5/data")
    assert state(fresh.engine)["nodes"] == state(h.engine)["nodes"]
    for domid in ring_domids(h.engine):
        assert queued(fresh.engine, domid) == queued(h.engine, domid), domid


def test_a_migrated_transaction_is_not_replayable() -> None:
    """The stream (C's format) cannot carry the requests a transaction ran:
    one restored from it answers a conflict with EAGAIN, as C does, where
    the original is replayed and commits."""
    h = rich_scene()
    fresh, _ = imported(migration.export(h.engine))
    old = h.engine.domains.domains[5].conn_id
    new = fresh.engine.domains.domains[5].conn_id
    assert old is not None and new is not None
    (tx_id,) = h.engine.connections[old].transactions
    assert h.engine.connections[old].transactions[tx_id].recording
    assert fresh.engine.connections[new].transactions[tx_id].recording is None
    assert fresh.end(new, tx_id) == "EAGAIN"
    assert h.end(old, tx_id) == "OK"
    assert h.read(h.dom0, "/local/domain/5/data/b") == b"2"


def test_big_endian_stream_reads_the_same() -> None:
    h = rich_scene()
    data = migration.export(h.engine, big_endian=True)
    assert data[8:16] == b"\0\0\0\2\0\0\0\1"
    fresh, result = imported(data)
    assert_same(h.engine, fresh.engine, result)


def test_version_1_widens_depth_watches_and_drops_features() -> None:
    h = rich_scene()
    data = migration.export(h.engine, version=1)
    types = {type(r) for r in migration.parse(data).records}
    assert migration.parse(data).version == 1 and migration.WatchData in types
    assert not any(
        isinstance(r, migration.WatchData) and r.extended for r in migration.parse(data).records
    )
    fresh, _ = imported(data)
    watches = state(fresh.engine)["domains"][5]["conn"]["watches"]
    assert ("/local/domain/5/deep", "abs", -1, 0) in watches
    # Features are not in a version 1 DOMAIN_DATA: the record keeps the default.
    assert fresh.engine.domains.domains[9].features == SUPPORTED_FEATURES
    assert h.engine.domains.domains[9].features == 2


def test_without_transactions_none_are_written() -> None:
    h = rich_scene()
    records = migration.parse(migration.export(h.engine, transactions=False)).records
    assert not any(isinstance(r, migration.TransactionData) for r in records)
    assert all(r.conn_id == 0 for r in records if isinstance(r, migration.NodeData))
    fresh, result = imported(migration.export(h.engine, transactions=False))
    assert result.transactions == 0
    assert all(not conn.transactions for conn in fresh.engine.connections.values())


def test_watch_records_follow_the_design_layout() -> None:
    h = Harness()
    guest_scene(h)
    data = migration.export(h.engine)
    ext = [r for r in migration.parse(data).records if isinstance(r, migration.WatchData)]
    assert [(w.path, w.depth, w.extended) for w in ext] == [
        ("data", -1, False),
        ("/local/domain/5/deep", 2, True),
        ("@releaseDomain", -1, False),
        ("@introduceDomain", 1, True),
    ]
    # depth at offset 8, padding, the path at offset 12.
    body = data[data.index(b"/local/domain/5/deep\0") - 12 :]
    assert struct.unpack_from("<IHHHH", body) == (2, 21, 4, 2, 0)


def test_pending_io_of_the_shell_goes_into_connection_data() -> None:
    h = Harness()
    guest_scene(h)
    g5 = h.engine.domains.domains[5].conn_id
    assert g5 is not None
    h.write_ok(h.dom0, "/local/domain/5/data/q", b"1")
    partial_in = struct.pack("=IIII", Op.READ, 3, 0, 10) + b"/loc"
    data = migration.export(h.engine, pending_io={g5: (partial_in, b"tail\0")})
    fresh, result = imported(data)
    (ring5,) = [ring for ring in result.rings if ring.domid == 5]
    assert ring5.pending_input == partial_in
    assert ring5.partial_output == b"tail\0"
    assert queued(fresh.engine, 5)[: len(queued(h.engine, 5))] == queued(h.engine, 5)


def strip_extensions(data: bytes) -> bytes:
    """The stream as a writer that knows only the design would write it."""
    out = bytearray(data[:16])
    offset = 16
    while True:
        type_, length = struct.unpack_from("<II", data, offset)
        body = data[offset + 8 : offset + 8 + length]
        if type_ == migration.TRANSACTION_DATA:
            body = body[:8]
        out += struct.pack("<II", type_, len(body)) + body
        if type_ == migration.END:
            return bytes(out)
        offset += 8 + length


def test_transactions_without_the_extension_are_derived() -> None:
    """From a writer without pyxenstored's extension: child lists, node
    count changes and commit events come from the nodes themselves."""
    h = Harness()
    g5, _ = guest_scene(h)
    h.write_ok(g5, "data/keep", b"k")
    tx = h.start(g5)
    h.write_ok(g5, "data/b", b"2", tx=tx)
    h.request(g5, Op.RM, "data/a", tx=tx)
    h.request(g5, Op.MKDIR, "data/n/m", tx=tx)
    h.read(g5, "data/keep", tx=tx)
    h.request(g5, Op.READ, "data/none", tx=tx)
    data = strip_extensions(migration.export(h.engine))
    assert all(
        r.extension is None
        for r in migration.parse(data).records
        if isinstance(r, migration.TransactionData)
    )
    fresh, _ = imported(data)
    old = _conn_state(h.engine, h.engine.connections[g5])["transactions"][tx]
    conn = fresh.engine.domains.domains[5].conn_id
    assert conn is not None
    new = _conn_state(fresh.engine, fresh.engine.connections[conn])["transactions"][tx]
    assert new["nodes"] == old["nodes"] and new["dirty"] == old["dirty"]
    assert new["deltas"] == old["deltas"] == {5: 2}  # b, n, n/m made; a removed
    assert new["created"] and not new["conflicts"]
    # Every change fires on commit; the parent's relink adds a spurious one.
    assert set(new["events"]) == new["dirty"]
    assert fresh.directory(conn, "/local/domain/5/data", tx=tx) == ["keep", "b", "n"]
    assert_behave_alike(h, fresh)


def test_lost_transactions_stay_lost() -> None:
    h = Harness()
    g5, _ = guest_scene(h)
    tx = h.start(g5)
    restarted = Harness()
    image.restore(restarted.engine, cbor2.loads(cbor2.dumps(image.snapshot(h.engine))), [])
    fresh, _ = imported(migration.export(restarted.engine))
    conn = fresh.engine.domains.domains[5].conn_id
    assert conn is not None
    assert fresh.engine.connections[conn].lost_transactions == {tx}
    fresh.drain(conn)
    assert fresh.end(conn, tx) == "EAGAIN"
    assert fresh.start(conn) != tx


def test_domain_data_for_an_unknown_domain_makes_the_record() -> None:
    """C's reader aborts here (spec 8.3 [BUG?])."""
    h = Harness()
    h.set_quota(12, "nodes", 5)
    h.ok(h.dom0, Op.SET_FEATURE, "12", "6")
    fresh, result = imported(migration.export(h.engine))
    assert result.created_domains == (12,)
    domain = fresh.engine.domains.domains[12]
    assert (domain.hard_quotas["nodes"], domain.features, domain.introduced) == (5, 6, False)


def test_children_keep_their_order() -> None:
    """The format has no child lists: a node's children are restored in the
    order of their NODE_DATA records, which a pre-order writer (C or this
    one) emits in child-list order."""
    h = Harness()
    for name in ("zeta", "alpha", "mid", "beta"):
        h.write_ok(h.dom0, f"/order/{name}", b"")
    h.request(h.dom0, Op.RM, "/order/alpha")
    h.write_ok(h.dom0, "/order/alpha", b"")
    fresh, _ = imported(migration.export(h.engine))
    assert fresh.directory(fresh.dom0, "/order") == ["zeta", "mid", "beta", "alpha"]


def test_perm_domids_are_kept_to_16_bits_as_in_c() -> None:
    h = Harness()
    h.write_ok(h.dom0, "/p", b"")
    h.set_perms(h.dom0, "/p", "n0", "r65541")  # stale: no such domain
    assert h.engine.tree.nodes["/p"].perms[1] == Perm(READ | IGNORE, 65541)
    fresh, _ = imported(migration.export(h.engine))
    assert fresh.engine.tree.nodes["/p"].perms[1] == Perm(READ | IGNORE, 5)


# ------------------------------------------------------ random engine states

_WHO = st.sampled_from(["dom0", "g5", "g6"])
_PATH = st.sampled_from(
    ["/a", "/a/b", "/a/b/c", "/d", "/d/e", "data", "data/x", "data/x/y", "x", "deep/a"]
)
_WATCH_PATH = st.sampled_from(["/a", "data", "/d/e", "@releaseDomain", "@introduceDomain", "x"])
_OWNER = st.sampled_from(["n0", "n5", "b6", "r5", "w8"])
_ACL = st.lists(st.sampled_from(["r5", "w6", "b0", "n7", "r8", "w0"]), max_size=3)
_QUOTA = st.sampled_from([*QUOTA_NAMES, "soft-memory"])
_STEP = st.one_of(
    st.tuples(st.just("write"), _WHO, st.booleans(), _PATH, st.binary(max_size=6)),
    st.tuples(st.just("mkdir"), _WHO, st.booleans(), _PATH),
    st.tuples(st.just("rm"), _WHO, st.booleans(), _PATH),
    st.tuples(st.just("read"), _WHO, st.booleans(), _PATH),
    st.tuples(st.just("perms"), _WHO, st.booleans(), _PATH, _OWNER, _ACL),
    st.tuples(st.just("watch"), _WHO, _WATCH_PATH, st.sampled_from(["t1", "t2"]),
              st.sampled_from([None, 0, 1, 3])),
    st.tuples(st.just("unwatch"), _WHO, _WATCH_PATH, st.sampled_from(["t1", "t2"])),
    st.tuples(st.just("start"), _WHO),
    st.tuples(st.just("end"), _WHO, st.booleans()),
    st.tuples(st.just("quota"), st.sampled_from([5, 6, 8, None]), _QUOTA,
              st.integers(0, 3000)),
    st.tuples(st.just("feature"), st.sampled_from([8, 9]), st.sampled_from([0, 2, 6, 14])),
    st.tuples(st.just("target"), st.sampled_from([5, 6])),
    st.tuples(st.just("introduce"), st.just(7)),
    st.tuples(st.just("release"), st.sampled_from([6, 7])),
)


def run_steps(steps: list[tuple[Any, ...]]) -> Harness:
    h = Harness()
    g5, g6 = guest_scene(h)
    conns = {"dom0": h.dom0, "g5": g5, "g6": g6}
    open_tx: dict[str, list[int]] = {}
    for step in steps:
        op, *args = step
        if op in ("write", "mkdir", "rm", "read", "perms", "watch", "unwatch", "start", "end"):
            who = args.pop(0)
            conn = conns.get(who)
            if conn is None or conn not in h.engine.connections:
                continue
            txs = open_tx.setdefault(who, [])
            if op in ("write", "mkdir", "rm", "read", "perms"):
                tx = txs[-1] if args.pop(0) and txs else 0
                if tx and tx not in h.engine.connections[conn].transactions:
                    txs.remove(tx)
                    continue
                if op == "write":
                    h.write(conn, args[0], args[1], tx=tx)
                elif op == "perms":
                    h.request(conn, Op.SET_PERMS, args[0], args[1], *args[2], tx=tx)
                else:
                    code = {"mkdir": Op.MKDIR, "rm": Op.RM, "read": Op.READ}[op]
                    h.request(conn, code, args[0], tx=tx)
            elif op == "watch":
                depth = () if args[2] is None else (str(args[2]),)
                h.request(conn, Op.WATCH, args[0], args[1], *depth)
            elif op == "unwatch":
                h.request(conn, Op.UNWATCH, args[0], args[1])
            elif op == "start":
                reply = h.request(conn, Op.TRANSACTION_START, "")
                if reply[0] == Op.TRANSACTION_START:
                    txs.append(int(reply[1].rstrip(b"\0")))
            elif op == "end" and txs:
                h.end(conn, txs.pop(0), commit=args[0])
        elif op == "quota":
            domid, name, value = args
            where = () if domid is None else (str(domid),)
            h.request(h.dom0, Op.SET_QUOTA, *where, name, str(value))
        elif op == "feature":
            h.request(h.dom0, Op.SET_FEATURE, str(args[0]), str(args[1]))
        elif op == "target":
            h.request(h.dom0, Op.SET_TARGET, str(args[0]), str(11 - args[0]))
        elif op == "introduce":
            h.request(h.dom0, Op.INTRODUCE, "7", "1", "12")
        elif op == "release":
            h.request(h.dom0, Op.RELEASE, str(args[0]))
        h.drain(h.dom0)
    return h


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEP, max_size=40), big_endian=st.booleans())
def test_any_state_round_trips(steps: list[tuple[Any, ...]], big_endian: bool) -> None:
    h = run_steps(steps)
    data = migration.export(h.engine, big_endian=big_endian)
    fresh, result = imported(data)
    assert_same(h.engine, fresh.engine, result)
    assert fresh.consistent() == []
    assert_behave_alike(h, fresh)


# --------------------------------------------------------------- bad streams


def _valid_stream() -> bytes:
    return migration.export(rich_scene().engine)


def _record(type_: int, body: bytes) -> bytes:
    return struct.pack("<II", type_, len(body)) + body + bytes(-len(body) % 8)


PREAMBLE = b"xenstore" + struct.pack(">II", 2, 0)
END = _record(migration.END, b"")


def _node(path: str, perms: bytes = b"n\0\0\0", conn: int = 0, tx: int = 0) -> bytes:
    raw = path.encode() + b"\0"
    count = len(perms) // 4
    return _record(
        migration.NODE_DATA, struct.pack("<IIHHHH", conn, tx, len(raw), 0, 0, count) + perms + raw
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no preamble"),
        (b"xenstorX" + PREAMBLE[8:] + END, "bad ident"),
        (b"xenstore" + struct.pack(">II", 3, 0) + END, "unsupported stream version 3"),
        (b"xenstore" + struct.pack(">II", 2, 4) + END, "reserved preamble flags"),
        (PREAMBLE, "without an END record"),
        (PREAMBLE + _node("/a")[:20], "truncated"),
        (PREAMBLE + _node("/a")[:6], "without an END record"),
        (PREAMBLE + _node("/a")[:-8], "truncated"),
        (PREAMBLE + _node("/a/b") + END, "parent /a not known"),
        (PREAMBLE + _node("/a") + _node("/a") + END, "a second record"),
        (PREAMBLE + _node("/a", b"x\0\0\0") + END, "permission letter"),
        (PREAMBLE + _node("/a", b"") + END, "no permissions"),
        (PREAMBLE + _node("a") + END, "invalid path"),
        (PREAMBLE + _node("/a//b") + END, "invalid path"),
        (PREAMBLE + _node("@other") + END, "invalid path"),
        (PREAMBLE + _node("/a", conn=3, tx=1) + END, "transaction 1 of connection 3 not known"),
        (
            PREAMBLE
            + _record(migration.WATCH_DATA, struct.pack("<IHH", 1, 3, 2) + b"/a\0t\0")
            + END,
            "connection 1 not known",
        ),
        (
            PREAMBLE
            + _record(migration.CONNECTION_DATA, struct.pack("<IHH8sHHI", 0, 0, 0, b"", 0, 0, 0))
            + END,
            "connection id 0",
        ),
        (
            PREAMBLE
            + _record(migration.CONNECTION_DATA, struct.pack("<IHH8sHHI", 1, 0, 0, b"", 0, 0, 3))
            + END,
            "truncated",
        ),
        (
            PREAMBLE
            + _record(
                migration.CONNECTION_DATA,
                struct.pack("<IHH8sHHI", 1, 0, 0, b"", 0, 0, 4) + b"abcd",
            )
            + END,
            "inside a message header",
        ),
        (
            PREAMBLE
            + _record(migration.DOMAIN_DATA, struct.pack("<HHI", 3, 2, 0) + b"\1\0\0\0\2\0\0\0a\0")
            + END,
            "2 quota names expected",
        ),
    ],
)
def test_malformed_streams_raise_migration_error(data: bytes, message: str) -> None:
    h = Harness()
    before = state(h.engine)
    with pytest.raises(migration.MigrationError, match=message):
        migration.import_stream(data, h.engine)
    assert state(h.engine) == before


def test_every_truncation_is_refused() -> None:
    data = _valid_stream()
    for cut in range(0, len(data) - 8, 7):
        with pytest.raises(migration.MigrationError):
            migration.parse(data[:cut])


_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4), valid=st.sampled_from([0, 1, 2]))
def test_mutated_streams_give_migration_error_or_a_sound_state(
    mutations: list[tuple[Any, ...]], valid: int
) -> None:
    data = bytearray(VALID_STREAMS[valid])
    for kind, where, arg in mutations:
        where %= len(data) + 1
        if kind == "flip" and where < len(data):
            data[where] ^= arg
        elif kind == "set" and where < len(data):
            data[where] = arg
        elif kind == "cut":
            del data[where : where + arg]
        elif kind == "insert":
            data[where:where] = arg
    h = Harness()
    before = state(h.engine)
    try:
        migration.import_stream(bytes(data), h.engine)
    except migration.MigrationError:
        assert state(h.engine) == before
        return
    assert h.consistent() == []
    # What was read can be written again and read back alike.
    again, result = imported(migration.export(h.engine))
    assert state(again.engine) == state(h.engine)
    # Whatever the transactions hold, ending them leaves a sound tree.
    for domid in ring_domids(h.engine):
        conn = h.engine.domains.domains[domid].conn_id
        assert conn is not None
        h.drain(conn)
        for tx_id in list(h.engine.connections[conn].transactions):
            h.end(conn, tx_id)
    assert h.consistent() == []


VALID_STREAMS = [
    migration.export(rich_scene().engine),
    migration.export(rich_scene().engine, version=1, big_endian=True),
    C417_DUMP.read_bytes(),
]


def test_watch_data_extended_in_the_layout_c_writes() -> None:
    """C's writer declares WATCH_DATA_EXTENDED but writes WATCH_DATA's 8 bytes,
    the path at offset 8, and a length counted for 12: the depth is lost and
    the next record starts earlier than declared (spec 8.3 [BUG?])."""
    ring = _record(
        migration.CONNECTION_DATA, struct.pack("<IHHHHIHHI", 1, 0, 0, 5, 0x7FF4, 3, 0, 0, 0)
    )
    records = []
    for path in ("/local/domain/5/x", "a"):  # 8+p+t rounds like 12+p+t, and does not
        raw, token = path.encode() + b"\0", b"tok\0"
        declared = -(-(12 + len(raw) + len(token)) // 8) * 8
        body = struct.pack("<IHH", 1, len(raw), len(token)) + raw + token
        body += bytes(-len(body) % 8)
        records.append(struct.pack("<II", migration.WATCH_DATA_EXTENDED, declared) + body)
    root = _node("/", b"n\0\0\0")
    fresh, result = imported(PREAMBLE + ring + b"".join(records) + root + END)
    conn = fresh.engine.domains.domains[5].conn_id
    assert conn is not None
    watches = _conn_state(fresh.engine, fresh.engine.connections[conn])["watches"]
    assert watches == [
        ("/local/domain/5/x", "tok", -1, 0),
        ("/local/domain/5/a", "tok", -1, 16),
    ]
    assert len(result.notes) == 2 and "no depth" in result.notes[0]


def test_unknown_records_are_skipped() -> None:
    data = PREAMBLE + _record(42, b"future") + _node("/") + END
    fresh, result = imported(data)
    assert result.skipped == (42,)
    assert fresh.consistent() == []


# ------------------------------------------------------ C xenstored 4.17's dump

#: The C daemon's event channel ports when the committed dump was made.
C417_PORTS = {0: 3, 5: 4, 6: 5}


def check_c417_import(data: bytes, ports: dict[int, int]) -> None:
    """What C 4.17 wrote for the scene of data/make_c417_dump.py, read back."""
    gen = _load_generator()
    fresh, result = imported(data)
    engine = fresh.engine
    assert result.version == 1
    assert result.transactions == 0  # the open one was dropped by C (-F)
    assert result.skipped == () and result.notes == () and result.created_domains == ()
    # Rings: dom0's own, 5, and 6 acting for 5; the ports are C's own ends.
    assert [(r.domid, r.evtchn) for r in result.rings] == [(d, ports[d]) for d in (0, 5, 6)]
    by_domid = {ring.domid: ring for ring in result.rings}
    assert by_domid[6].pending_input == gen.PARTIAL_REQUEST
    assert by_domid[5].partial_output and by_domid[6].partial_output
    assert by_domid[0].pending_input == by_domid[0].partial_output == b""
    conns = {domid: engine.connections[ring.conn_id] for domid, ring in by_domid.items()}
    assert conns[0].privileged and not conns[5].privileged
    assert conns[6].target == 5 and conns[5].target is None
    assert _conn_state(engine, conns[5])["watches"] == [
        ("/local/domain/5/data", "tok1", -1, 16),
        ("@releaseDomain", "tok3", -1, 0),
    ]
    assert _conn_state(engine, conns[6])["watches"] == [("/local/domain/5", "t6", -1, 0)]
    for domid in (5, 6):
        domain = engine.domains.domains[domid]
        assert domain.introduced and domain.port == ports[domid]
    # The rest of the events the guests had not read, whole, in order; then
    # one event per restored watch.
    events5 = [m[16:] for m in queued(engine, 5)]
    first = int(by_domid[5].partial_output.split(b"data/n")[1][:2]) + 1
    expected = [f"data/n{i:02d}\0tok1\0".encode() for i in range(first, gen.WRITES)]
    assert events5 == [*expected, b"data\0tok1\0", b"@releaseDomain\0tok3\0"]
    events6 = [m[16:] for m in queued(engine, 6)]
    assert events6[-2:] == [
        f"/local/domain/5/data/n{gen.WRITES - 1:02d}\0t6\0".encode(),
        b"/local/domain/5\0t6\0",
    ]
    # Sockets: the dom0 watcher, then xenstore-control with its queued "OK".
    assert [(s.watches, s.transactions) for s in result.sockets] == [
        ((("/vm", "vmtok", -1),), ()),
        ((), ()),
    ]
    (ok,) = result.sockets[1].messages
    assert struct.unpack_from("=IIII", ok) == (Op.CONTROL, 0, 0, 3) and ok[16:] == b"OK\0"
    # The tree, stale permission entries flagged as C flagged them.
    nodes = engine.tree.nodes
    n0 = Perm(0, 0)
    assert _content(nodes["/vm/a"]) == (b"1", (n0, Perm(READ | IGNORE, 9)), ())
    assert _content(nodes["/vm/b"]) == (
        b"two", (n0, Perm(READ, 5), Perm(WRITE | IGNORE, 7)), ()
    )
    assert nodes["/vm/bin"].value == bytes([0, 1, 0xFE, 0xFF])
    assert list(nodes["/"].children) == ["tool", "vm", "local"]
    assert list(nodes["/vm"].children) == ["a", "b", "bin"]
    assert list(nodes["/local/domain"].children) == ["5", "6"]
    assert list(nodes["/local/domain/5/data"].children) == [
        f"n{i:02d}" for i in range(gen.WRITES)
    ]
    assert nodes["/local/domain/5"].perms == (Perm(0, 5), Perm(READ, 0))
    assert nodes["@releaseDomain"].perms == (n0,)  # 4.17 has no DOMID_ANY entry
    # C 4.17 writes the special nodes first, and each record takes the next
    # generation.
    assert nodes["@releaseDomain"].generation == 1
    assert nodes["@introduceDomain"].generation == 2
    assert nodes["/"].generation == 3
    assert engine.tree.generation == len(nodes) == result.nodes
    assert fresh.consistent() == []
    # Quotas are not in a version 1 stream (C ran with -Q outstanding=30).
    assert engine.config.hard_quotas["outstanding"] == 20
    # The imported engine serves the state.
    assert fresh.read(fresh.dom0, "/vm/b") == b"two"
    g5, g6 = by_domid[5].conn_id, by_domid[6].conn_id
    fresh.drain(g5)
    fresh.drain(g6)
    assert fresh.read(g6, "/local/domain/5/data/n00") == b"v"  # as target of 5
    assert fresh.read(g5, "/vm/b") == b"two"
    assert fresh.err(g5, Op.READ, "/vm/a") == "EACCES"
    # Written back, the committed nodes are C's records (specials moved last).
    again = migration.parse(migration.export(engine, version=1, transactions=False))

    def committed(stream: migration.Stream) -> list[tuple[str, bytes, Any]]:
        return [
            (r.path, r.value, r.perms)
            for r in stream.records
            if isinstance(r, migration.NodeData) and r.path[0] == "/"
        ]

    assert committed(again) == committed(migration.parse(data))


def test_reads_the_committed_c417_dump() -> None:
    check_c417_import(C417_DUMP.read_bytes(), C417_PORTS)


def _c417_available() -> str | None:
    gen = _load_generator()
    if shutil.which("gcc") is None or not Path("/usr/include/xenevtchn.h").exists():
        return "gcc and the libxen-dev headers are needed for tests/fakexen"
    for binary in (gen.XEN_BIN / "xenstored", gen.XENSTORE_CONTROL):
        if not binary.exists():
            return f"{binary} is not installed (Debian package xen-utils-4.17)"
    return None


def test_reads_a_dump_c417_writes_now(tmp_path: Path) -> None:
    """The same scene run live: C 4.17 under the stand-in, live-updated by
    xenstore-control into a script that keeps the state_dump."""
    reason = _c417_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "state_dump"
    facts = _load_generator().make_dump(tmp_path, out)
    check_c417_import(out.read_bytes(), facts["ports"])


def test_c417_reads_a_stream_this_module_writes(tmp_path: Path) -> None:
    """The other way: C 4.17 started with -U on a version 1 stream from here
    serves the nodes, with the stale flags, on the listening socket handed
    over in GLOBAL_DATA."""
    reason = _c417_available()
    if reason:
        pytest.skip(reason)
    gen = _load_generator()
    h = Harness()
    h.engine.connect_local_ring()  # C's reader sets up its store with dom0's ring
    h.write_ok(h.dom0, "/vm/a", b"1")
    h.write_ok(h.dom0, "/vm/b", b"\x00bin")
    h.set_perms(h.dom0, "/vm/a", "n0", "r5", "b65541")
    h.write_ok(h.dom0, "/order/zeta", b"")
    h.write_ok(h.dom0, "/order/alpha", b"")
    fx = gen.FakeXen(tmp_path / "fx")
    rundir = tmp_path / "run"
    rundir.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(rundir / "socket"))
    listener.listen()
    fd = listener.fileno()
    (rundir / "state_dump").write_bytes(
        migration.export(h.engine, version=1, transactions=False, socket_fd=fd)
    )
    env = dict(
        os.environ,
        LD_PRELOAD=str(gen.build_library()),
        FAKEXEN_DIR=str(fx.root),
        XENSTORED_RUNDIR=str(rundir),
    )
    log = rundir / "xenstored.out"
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            [str(gen.XEN_BIN / "xenstored"), "--no-fork", "-U"],
            env=env, stdout=output, stderr=output, pass_fds=(fd,),
        )
    listener.close()
    try:
        request = gen.socket_request
        assert request(rundir / "socket", Op.READ, b"/vm/b\0") == b"\x00bin"
        assert request(rundir / "socket", Op.GET_PERMS, b"/vm/a\0") == b"n0\0r5\0b5\0"
        assert request(rundir / "socket", Op.DIRECTORY, b"/order\0") == b"zeta\0alpha\0"
        assert not (rundir / "state_dump").exists()  # C deletes it once read
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace"))
        raise
    finally:
        proc.terminate()
        proc.wait(20)


# ----------------------------------------------------------------- the command


def _state_dir(engine: Engine, directory: Path) -> Path:
    directory.mkdir()
    files.write_snapshot(directory, 0, cbor2.dumps(image.snapshot(engine)))
    return directory


def test_command_export_import_and_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = Harness()
    guest_scene(h)
    h.write_ok(h.dom0, "/vm/x", b"1")
    h.set_quota(5, "nodes", 42)
    source = _state_dir(h.engine, tmp_path / "source")
    stream = tmp_path / "stream"
    assert state_tool.main(["export", str(source), str(stream)]) == 0
    assert state_tool.main(["dump", str(stream)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "xenstore migration stream, version 2, little-endian"
    assert "NODE_DATA /vm/x perms=n0 value=b'1'" in out and out[-1] == "END"
    target = tmp_path / "target"
    assert state_tool.main(["import", str(stream), str(target)]) == 0
    engine, _ = state_tool.load_engine(target)
    original, _ = state_tool.load_engine(source)
    assert state(engine) == state(original)
    # import wants an empty directory; errors are one line and status 1.
    assert state_tool.main(["import", str(stream), str(target)]) == 1
    assert "not empty" in capsys.readouterr().err
    (tmp_path / "bad").write_bytes(b"junk")
    assert state_tool.main(["dump", str(tmp_path / "bad")]) == 1
    assert "no preamble" in capsys.readouterr().err


def test_command_imports_the_c417_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "state"
    assert state_tool.main(["import", str(C417_DUMP), str(target)]) == 0
    err = capsys.readouterr().err
    assert "version 1" in err and "socket connection 5 (fd 13) dropped" in err
    assert "domain 6: not kept in a state directory: pending input (26 bytes)" in err
    engine, restored = state_tool.load_engine(target)
    assert engine.tree.nodes["/vm/b"].value == b"two"
    assert restored.watches == 3
    stream = tmp_path / "back"
    args = ["export", "-v", "1", "--no-transactions", str(target), str(stream)]
    assert state_tool.main(args) == 0
    assert migration.parse(stream.read_bytes()).version == 1


def test_console_script_runs_as_a_module(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyxenstored.persist.state_tool", "dump", str(C417_DUMP)],
        capture_output=True, text=True, check=True,
    )
    assert proc.stdout.startswith("xenstore migration stream, version 1")
    assert "CONNECTION_DATA conn=3 ring domid=6 target=5" in proc.stdout
