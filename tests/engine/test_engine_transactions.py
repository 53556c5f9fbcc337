"""TRANSACTION_START / TRANSACTION_END through the engine (spec 1.3, 4, 5.5, XSA-421)."""

import pytest
from engine_harness import Harness, World

from pyxenstored.config import Config
from pyxenstored.protocol.ops import Op


def test_ids_start_at_one_and_are_per_connection(h: Harness) -> None:
    """Spec 4.1: a per-connection counter from 1; ids are never reused while live."""
    other = h.engine.connect_socket()
    assert h.ok(h.dom0, Op.TRANSACTION_START, "") == b"1\0"
    assert [h.start(h.dom0), h.start(h.dom0)] == [2, 3]
    assert h.start(other) == 1
    # An empty payload (no NUL) is accepted too.
    assert h.raw(other, Op.TRANSACTION_START, b"") == (Op.TRANSACTION_START, b"2\0")


def test_reply_echoes_tx_id(h: Harness) -> None:
    tx = h.start(h.dom0)
    packets = h.send(h.dom0, Op.READ, b"/\0", tx=tx)
    assert packets[0].tx_id == tx


@pytest.mark.parametrize(
    ("setup", "op", "payload", "tx", "expected"),
    [
        pytest.param("live", Op.TRANSACTION_START, b"", "live", "EBUSY", id="4.1:nested-ebusy"),
        pytest.param("none", Op.TRANSACTION_START, b"", 77, "ENOENT", id="1.3:start-unknown-tx"),
        pytest.param("live", Op.TRANSACTION_END, b"TT\0", "live", "EINVAL", id="4.1:end-TT"),
        pytest.param("live", Op.TRANSACTION_END, b"t\0", "live", "EINVAL", id="4.1:end-lowercase"),
        pytest.param("live", Op.TRANSACTION_END, b"T", "live", "EINVAL", id="1.2:end-no-nul"),
        pytest.param("live", Op.TRANSACTION_END, b"", "live", "EINVAL", id="1.2:end-empty"),
        pytest.param("live", Op.TRANSACTION_END, b"T\0\0", "live", "EINVAL", id="1.2:end-extra"),
        pytest.param("none", Op.TRANSACTION_END, b"T\0", 0, "ENOENT", id="4.1:end-tx0"),
        pytest.param("none", Op.TRANSACTION_END, b"T\0", 9, "ENOENT", id="4.1:end-unknown"),
        pytest.param("ended", Op.TRANSACTION_END, b"T\0", "ended", "ENOENT", id="4.1:end-twice"),
        pytest.param("ended", Op.READ, b"/\0", "ended", "ENOENT", id="4.1:use-after-end"),
        pytest.param("none", Op.READ, b"/\0", 5, "ENOENT", id="1.3:read-unknown-tx"),
        pytest.param("none", Op.WRITE, b"/x\0v", 5, "ENOENT", id="1.3:write-unknown-tx"),
        pytest.param("none", Op.GET_DOMAIN_PATH, b"1\0", 5, "ENOENT", id="1.3:other-op-lookup"),
        pytest.param("live", Op.GET_DOMAIN_PATH, b"1\0", "live", "/local/domain/1",
                     id="1.3:other-op-ignores-tx"),
        pytest.param("live", Op.TRANSACTION_END, b"F\0", "live", "OK", id="4.1:abort"),
        pytest.param("live", Op.TRANSACTION_END, b"T\0", "live", "OK", id="4.1:commit-empty"),
    ],
)
def test_transaction_protocol(h: Harness, setup, op, payload, tx, expected) -> None:
    live = h.start(h.dom0) if setup in ("live", "ended") else 0
    if setup == "ended":
        assert h.end(h.dom0, live) == "OK"
    tx_id = live if tx in ("live", "ended") else tx
    _, reply = h.raw(h.dom0, op, payload, tx=tx_id)
    assert reply.rstrip(b"\0").decode() == expected


def test_end_with_bad_argument_keeps_the_transaction(h: Harness) -> None:
    """Spec 4.1: only END itself (with T or F) kills the id; a malformed END does not."""
    tx = h.start(h.dom0)
    assert h.err(h.dom0, Op.TRANSACTION_END, "TT", tx=tx) == "EINVAL"
    assert h.end(h.dom0, tx) == "OK"


def test_read_your_writes_and_isolation(h: Harness) -> None:
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/t/a", b"1", tx=tx)
    assert h.read(h.dom0, "/t/a", tx=tx) == b"1"
    assert h.directory(h.dom0, "/t", tx=tx) == ["a"]
    assert h.err(h.dom0, Op.READ, "/t/a") == "ENOENT"
    assert h.end(h.dom0, tx) == "OK"
    assert h.read(h.dom0, "/t/a") == b"1"


def test_abort_discards_and_fires_nothing(h: Harness) -> None:
    watcher = h.engine.connect_socket()
    h.watch(watcher, "/", "t")
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/t/a", b"1", tx=tx)
    h.ok(h.dom0, Op.RM, "/tool", tx=tx)
    assert h.events(watcher) == []
    assert h.end(h.dom0, tx, commit=False) == "OK"
    assert h.events(watcher) == []
    assert h.err(h.dom0, Op.READ, "/t") == "ENOENT"
    assert h.read(h.dom0, "/tool") == b""
    assert h.consistent() == []


def test_commit_fires_queued_events_once(h: Harness) -> None:
    """Spec 5.5: events fire only at commit, one per modified node, in access order."""
    watcher = h.engine.connect_socket()
    h.write_ok(h.dom0, "/old/kid")
    h.watch(watcher, "/", "t")
    h.watch(watcher, "/old/kid", "kid")
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/t/a", b"1", tx=tx)
    h.write_ok(h.dom0, "/t/a", b"2", tx=tx)
    h.ok(h.dom0, Op.SET_PERMS, "/t/a", "n0", "r1", tx=tx)
    h.ok(h.dom0, Op.RM, "/old", tx=tx)
    assert h.events(watcher) == []
    assert h.end(h.dom0, tx) == "OK"
    # First-access order: RM reads /old before /old/kid.
    assert h.events(watcher) == [("/t/a", "t"), ("/old", "t"), ("/old/kid", "kid")]


def test_commit_events_reach_the_committer_before_its_reply(h: Harness) -> None:
    h.watch(h.dom0, "/t", "t")
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/t/x", b"", tx=tx)
    packets = h.send(h.dom0, Op.TRANSACTION_END, b"T\0", tx=tx)
    assert [p.type for p in packets] == [Op.WATCH_EVENT, Op.TRANSACTION_END]


@pytest.mark.parametrize(
    ("inside", "outside", "expected", "replayed"),
    [
        pytest.param(("write", "/c/a"), ("write", "/c/b"), "EAGAIN", "OK",
                     id="4.2:sibling-created"),
        pytest.param(("read", "/c"), ("write", "/c", b"x"), "EAGAIN", "EAGAIN",
                     id="4.2:read-then-changed"),
        pytest.param(("read", "/c/none"), ("write", "/c/none"), "EAGAIN", "EAGAIN",
                     id="4.2:missing-then-created"),
        pytest.param(("directory", "/c"), ("write", "/c/z"), "EAGAIN", "EAGAIN",
                     id="4.2:directory-then-child-added"),
        # The value read is the same, and dom0 may still read it.
        pytest.param(("read", "/c"), ("set_perms", "/c"), "EAGAIN", "OK",
                     id="4.2:perms-changed"),
        pytest.param(("read", "/c/k"), ("rm", "/c/k"), "EAGAIN", "EAGAIN",
                     id="4.2:read-then-removed"),
        pytest.param(("read", "/c"), ("write", "/other"), "OK", "OK", id="4.2:unrelated-write"),
        pytest.param(("write", "/c/k/x"), ("write", "/c", b"y"), "OK", "OK",
                     id="4.2:grandparent-value-untouched"),
        pytest.param(("read", "/c/k"), ("read", "/c/k"), "OK", "OK", id="4.2:outside-read-only"),
    ],
)
@pytest.mark.parametrize("replay", [False, True], ids=["C", "replay"])
def test_conflicts(inside, outside, expected, replayed, replay: bool) -> None:
    """Spec 4.2 (C: any change to a node accessed is EAGAIN) and 4.3 (replay:
    EAGAIN only when some reply the transaction got would now differ)."""
    h = Harness(Config(replay_max_requests=1024 if replay else 0))
    d0 = h.dom0
    h.write_ok(d0, "/c/k", b"")
    other = h.engine.connect_socket()
    tx = h.start(d0)

    def do(conn: int, action: tuple, tx_id: int) -> None:
        kind, path, *rest = action
        if kind == "write":
            h.write_ok(conn, path, rest[0] if rest else b"", tx=tx_id)
        elif kind == "read":
            h.request(conn, Op.READ, path, tx=tx_id)
        elif kind == "directory":
            h.ok(conn, Op.DIRECTORY, path, tx=tx_id)
        elif kind == "set_perms":
            h.ok(conn, Op.SET_PERMS, path, "n0", "r3", tx=tx_id)
        elif kind == "rm":
            h.ok(conn, Op.RM, path, tx=tx_id)

    do(d0, inside, tx)
    do(other, outside, 0)
    assert h.end(d0, tx) == (replayed if replay else expected)
    assert h.consistent() == []


def test_two_transactions_creating_siblings() -> None:
    """Spec 4.2: both rewrite the parent's child list; in C the second commit loses."""
    h = Harness(Config(replay_max_requests=0))
    h.write_ok(h.dom0, "/s")
    a, b = h.start(h.dom0), h.start(h.dom0)
    h.write_ok(h.dom0, "/s/a", b"", tx=a)
    h.write_ok(h.dom0, "/s/b", b"", tx=b)
    assert h.end(h.dom0, a) == "OK"
    assert h.end(h.dom0, b) == "EAGAIN"
    assert h.directory(h.dom0, "/s") == ["a"]
    # EAGAIN kills the id too.
    assert h.err(h.dom0, Op.READ, "/s", tx=b) == "ENOENT"


def test_eagain_fires_nothing() -> None:
    h = Harness(Config(replay_max_requests=0))
    watcher = h.engine.connect_socket()
    h.write_ok(h.dom0, "/s")
    h.watch(watcher, "/s", "t")
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/s/a", b"", tx=tx)
    h.write_ok(h.dom0, "/s/b")
    assert h.events(watcher) == [("/s/b", "t")]
    assert h.end(h.dom0, tx) == "EAGAIN"
    assert h.events(watcher) == []


def test_guest_transaction_permissions_and_errors_keep_it_usable(world: World) -> None:
    """A permission error inside a transaction leaves it usable (only quota errors fail it)."""
    h = world.h
    tx = h.start(world.g5)
    assert h.err(world.g5, Op.WRITE, "/priv/x", tx=tx) == "EACCES"
    assert h.err(world.g5, Op.READ, "/pub/missing", tx=tx) == "ENOENT"
    h.write_ok(world.g5, "data/in-tx", b"1", tx=tx)
    assert h.end(world.g5, tx) == "OK"
    assert h.read(world.g5, "data/in-tx") == b"1"
    assert h.perms(h.dom0, "/local/domain/5/data/in-tx") == ["n5"]


def test_create_then_delete_in_transaction_keeps_accounting(world: World) -> None:
    """XSA-421: create-then-delete inside a transaction leaves accounting = recount."""
    h = world.h
    g5 = world.g5
    before = h.engine.tree.accounting.of(5).nodes
    tx = h.start(g5)
    h.write_ok(g5, "data/a/b/c", b"x", tx=tx)
    h.ok(g5, Op.RM, "data/a", tx=tx)
    h.write_ok(g5, "data/z", b"x", tx=tx)
    h.ok(g5, Op.RM, "data/z", tx=tx)
    h.write_ok(g5, "data/keep", b"x", tx=tx)
    assert h.end(g5, tx) == "OK"
    assert h.engine.tree.accounting.of(5).nodes == before + 1 == h.recount(5)
    assert h.consistent() == []
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"
    assert h.consistent() == []


def test_transaction_rm_of_committed_subtree_accounting(world: World) -> None:
    h = world.h
    g5 = world.g5
    for name in ("a/b", "a/c/d", "e"):
        h.write_ok(g5, f"data/{name}")
    tx = h.start(g5)
    h.ok(g5, Op.RM, "data/a", tx=tx)
    h.write_ok(g5, "data/a", b"again", tx=tx)
    assert h.end(g5, tx) == "OK"
    assert h.directory(g5, "data") == ["e", "a"]
    assert h.directory(g5, "data/a") == []
    assert h.engine.tree.accounting.of(5).nodes == h.recount(5)
    assert h.consistent() == []


def test_set_perms_in_transaction_moves_ownership_at_commit(world: World) -> None:
    h = world.h
    h.write_ok(h.dom0, "/gift/a")
    tx = h.start(h.dom0)
    h.ok(h.dom0, Op.SET_PERMS, "/gift/a", "n5", tx=tx)
    assert h.perms(h.dom0, "/gift/a") == ["n0"]
    before = h.recount(5)
    assert h.end(h.dom0, tx) == "OK"
    assert h.recount(5) == before + 1 == h.engine.tree.accounting.of(5).nodes
    assert h.consistent() == []


def test_transactions_of_a_disconnected_connection_vanish(h: Harness) -> None:
    conn = h.engine.connect_socket()
    tx = h.start(conn)
    h.write_ok(conn, "/gone", b"", tx=tx)
    h.engine.disconnect(conn)
    assert h.err(h.dom0, Op.READ, "/gone") == "ENOENT"
    assert h.consistent() == []


def test_rm_of_a_node_whose_parent_the_transaction_saw_missing(h: Harness) -> None:
    """No snapshot isolation (spec 4.2): the transaction found /a missing,
    then sees /a/b created since. C ``_rm`` answers EINVAL, changing nothing
    (found by the serializability property test; it used to crash)."""
    tx = h.start(h.dom0)
    assert h.err(h.dom0, Op.READ, "/a", tx=tx) == "ENOENT"
    h.write_ok(h.engine.connect_socket(), "/a/b", b"v")
    assert h.err(h.dom0, Op.RM, "/a/b", tx=tx) == "EINVAL"
    assert h.read(h.dom0, "/a/b", tx=tx) == b"v"
    assert h.end(h.dom0, tx) == "EAGAIN"  # its READ of /a differs now
    assert h.read(h.dom0, "/a/b") == b"v"
