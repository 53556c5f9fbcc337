"""Replay on conflict (oxenstored's, spec 4.3; issue #7): a transaction that
conflicts is run again at commit, and commits when every reply it got is
still the one it would get; otherwise EAGAIN, as C."""

from __future__ import annotations

import pytest
from engine_harness import Harness, World
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.cli import parse_args
from pyxenstored.config import Config
from pyxenstored.protocol.ops import Op
from pyxenstored.transactions import TransactionView


def _usage(h: Harness) -> dict[int, tuple[int, int, int, int]]:
    return {d: (u.nodes, u.memory, u.watches, u.transactions)
            for d, u in h.engine.tree.accounting.usage.items()}


def test_siblings_created_concurrently_both_commit(h: Harness) -> None:
    """The case C loses: both transactions add a child to one parent."""
    watcher = h.engine.connect_socket()
    h.watch(watcher, "/local/domain", "w")
    a_conn, b_conn = h.engine.connect_socket(), h.engine.connect_socket()
    a, b = h.start(a_conn), h.start(b_conn)
    h.ok(a_conn, Op.MKDIR, "/local/domain/1", tx=a)
    h.ok(b_conn, Op.MKDIR, "/local/domain/2", tx=b)
    h.write_ok(a_conn, "/local/domain/1/name", b"one", tx=a)
    h.write_ok(b_conn, "/local/domain/2/name", b"two", tx=b)
    assert h.end(a_conn, a) == "OK"
    assert h.events(watcher) == [("/local/domain/1", "w"), ("/local/domain/1/name", "w")]
    assert h.engine.connections[b_conn].transactions[b].conflicts()
    assert h.end(b_conn, b) == "OK"  # replayed
    # The replayed one fires the events of its own changes, once each.
    assert h.events(watcher) == [("/local/domain/2", "w"), ("/local/domain/2/name", "w")]
    assert h.directory(h.dom0, "/local/domain") == ["1", "2"]
    assert h.read(h.dom0, "/local/domain/2/name") == b"two"
    assert h.consistent() == []


@pytest.mark.parametrize(
    ("inside", "outside"),
    [
        pytest.param((Op.READ, "/c/k"), ("write", "/c/k", b"new"), id="read-value-changed"),
        pytest.param((Op.READ, "/c/none"), ("write", "/c/none", b""), id="read-missing-created"),
        pytest.param((Op.READ, "/c/k"), ("rm", "/c/k"), id="read-removed"),
        pytest.param((Op.DIRECTORY, "/c"), ("write", "/c/z", b""), id="directory-child-added"),
        pytest.param((Op.DIRECTORY, "/c"), ("rm", "/c/k"), id="directory-child-removed"),
        # Same listing, but the generation in the reply moved.
        pytest.param((Op.DIRECTORY_PART, "/c", "0"), ("write", "/c", b"v"),
                     id="directory-part-generation"),
        pytest.param((Op.GET_PERMS, "/c/k"), ("perms", "/c/k"), id="get-perms-changed"),
    ],
)
def test_a_reply_that_would_differ_is_eagain(h: Harness, inside, outside) -> None:
    d0 = h.dom0
    h.write_ok(d0, "/c/k", b"old")
    other = h.engine.connect_socket()
    tx = h.start(d0)
    op, *args = inside
    h.request(d0, op, *args, tx=tx)
    h.write_ok(d0, "/c/mine", b"x", tx=tx)
    kind, path, *rest = outside
    if kind == "write":
        h.write_ok(other, path, rest[0])
    elif kind == "rm":
        h.ok(other, Op.RM, path)
    else:
        h.ok(other, Op.SET_PERMS, path, "n0", "r7")
    assert h.end(d0, tx) == "EAGAIN"
    assert h.err(d0, Op.READ, "/c/mine") == "ENOENT"
    assert h.consistent() == []


def test_write_only_transaction_wins_over_an_earlier_writer(h: Harness) -> None:
    """Its target changed under it, but it read nothing: replayed, it is the
    transaction run at commit time, so its value is the last one written.
    oxenstored does the same (its replay compares the WRITE reply only)."""
    h.write_ok(h.dom0, "/t/v", b"start")
    other = h.engine.connect_socket()
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/t/v", b"from-tx", tx=tx)
    h.write_ok(other, "/t/v", b"from-other")
    assert h.end(h.dom0, tx) == "OK"
    assert h.read(h.dom0, "/t/v") == b"from-tx"


def test_errors_are_replies_too(h: Harness) -> None:
    """A request refused the same way again keeps the transaction replayable;
    one that now succeeds (or fails otherwise) does not."""
    h.write_ok(h.dom0, "/p")
    other = h.engine.connect_socket()
    same, changed = h.start(h.dom0), h.start(h.dom0)
    for tx in (same, changed):
        assert h.err(h.dom0, Op.READ, "/p/missing", tx=tx) == "ENOENT"
        assert h.err(h.dom0, Op.READ, "/p/later", tx=tx) == "ENOENT"
    h.write_ok(h.dom0, "/p/a", b"", tx=same)
    h.write_ok(h.dom0, "/p/b", b"", tx=changed)
    h.write_ok(other, "/p/sibling")
    assert h.end(h.dom0, same) == "OK"
    h.write_ok(other, "/p/later")
    assert h.end(h.dom0, changed) == "EAGAIN"


def test_past_the_recording_cap_a_conflict_is_eagain() -> None:
    """Config.replay_max_requests bounds the recording; past it nothing is
    refused, but the transaction is no longer replayable (C's behaviour)."""
    h = Harness(Config(replay_max_requests=3))
    h.write_ok(h.dom0, "/s")
    other = h.engine.connect_socket()
    small, big = h.start(h.dom0), h.start(h.dom0)
    for i in range(3):
        h.write_ok(h.dom0, f"/s/small{i}", b"", tx=small)
    for i in range(4):  # the fourth is still answered
        h.write_ok(h.dom0, f"/s/big{i}", b"", tx=big)
    assert h.engine.connections[h.dom0].transactions[small].recording is not None
    assert h.engine.connections[h.dom0].transactions[big].recording is None
    h.write_ok(other, "/s/other")
    assert h.end(h.dom0, small) == "OK"
    assert h.end(h.dom0, big) == "EAGAIN"
    assert h.directory(h.dom0, "/s") == ["other", "small0", "small1", "small2"]


def test_replay_off_is_cs_behaviour() -> None:
    h = Harness(Config(replay_max_requests=0))
    h.write_ok(h.dom0, "/s")
    tx = h.start(h.dom0)
    assert h.engine.connections[h.dom0].transactions[tx].recording is None
    h.write_ok(h.dom0, "/s/a", b"", tx=tx)
    h.write_ok(h.dom0, "/s/b")
    assert h.end(h.dom0, tx) == "EAGAIN"


def test_the_command_line_turns_replay_off() -> None:
    """``--no-transaction-replay``; C's flags (abbreviated too) still parse."""
    default = parse_args(["-N", "--trans", "5"], {}, warn=False)
    assert default is not None
    assert default.config.replay_max_requests == Config().replay_max_requests == 1024
    assert default.config.hard_quotas["transactions"] == 5
    off = parse_args(["--no-transaction-replay", "--no-fork", "-t", "3"], {}, warn=False)
    assert off is not None and off.no_fork
    assert off.config.replay_max_requests == 0


def test_only_node_requests_inside_the_transaction_are_recorded(h: Harness) -> None:
    h.write_ok(h.dom0, "/r", b"v")
    tx = h.start(h.dom0)
    h.read(h.dom0, "/r", tx=tx)
    h.ok(h.dom0, Op.GET_DOMAIN_PATH, "3", tx=tx)
    h.read(h.dom0, "/r")  # outside
    h.err(h.dom0, Op.READ, "/r/none", tx=tx)
    h.write_ok(h.dom0, "/r/w", b"x", tx=tx)
    recording = h.engine.connections[h.dom0].transactions[tx].recording
    assert recording == [
        (Op.READ, b"/r\0", b"v"),
        (Op.READ, b"/r/none\0", "ENOENT"),
        (Op.WRITE, b"/r/w\0x", b"OK\0"),
    ]


# ---------------------------------------------------------------- quotas


def test_quota_full_at_commit_is_enospc_before_any_replay(world: World) -> None:
    """C's order: the created-node quota is checked before conflicts."""
    h = world.h
    tx = h.start(world.g5)
    h.write_ok(world.g5, "data/new", b"", tx=tx)
    used = h.engine.tree.accounting.of(5).nodes
    h.set_quota(5, "nodes", used + 2)
    h.write_ok(h.dom0, "/local/domain/5/data/by-dom0")  # owned by 5: the quota is full
    assert h.end(world.g5, tx) == "ENOSPC"
    assert h.err(h.dom0, Op.READ, "/local/domain/5/data/new") == "ENOENT"


def test_quota_met_by_the_replay_is_eagain(world: World) -> None:
    """The replay creates more than the first run did (a parent dom0 removed
    meanwhile) and the nodes quota refuses that: its reply differs, so
    EAGAIN, and neither the tree nor accounting moved."""
    h = world.h
    h.write_ok(h.dom0, "/local/domain/5/shared")
    h.set_perms(h.dom0, "/local/domain/5/shared", "n0", "b5")  # 0 owns it, 5 may write
    tx = h.start(world.g5)
    h.write_ok(world.g5, "shared/x", b"", tx=tx)  # one node for 5
    h.set_quota(5, "nodes", h.engine.tree.accounting.of(5).nodes + 2)  # room for one
    h.ok(h.dom0, Op.RM, "/local/domain/5/shared")
    nodes, usage = set(h.engine.tree.nodes), _usage(h)
    # The first run's quota check passes (one node); the replayed WRITE must
    # create ``shared`` too: two nodes, refused.
    assert h.end(world.g5, tx) == "EAGAIN"
    assert set(h.engine.tree.nodes) == nodes
    usage[5] = (*usage[5][:3], usage[5][3] - 1)  # the transaction ended
    assert _usage(h) == usage
    assert h.engine.tree.accounting.of(5).nodes == h.recount(5)
    assert h.consistent() == []


def test_replayed_commit_checks_the_quota_of_the_fresh_view(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a replay the commit is the fresh view's: the quota check runs
    again on its node deltas (white box: which views are checked)."""
    h = world.h
    checked = []
    original = h.engine._check_commit_quota
    monkeypatch.setattr(h.engine, "_check_commit_quota",
                        lambda tx: (checked.append(tx), original(tx)))
    tx = h.start(world.g5)
    h.write_ok(world.g5, "data/n", b"", tx=tx)
    first = h.engine.connections[world.g5].transactions[tx]
    h.write_ok(h.dom0, "/local/domain/5/data/sibling")
    assert h.end(world.g5, tx) == "OK"
    assert len(checked) == 2 and checked[0] is first and checked[1] is not first
    assert checked[1].node_deltas == {5: 1}
    assert h.engine.tree.accounting.of(5).nodes == h.recount(5)


def test_a_replay_that_fails_its_transaction_is_eagain(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run met the nodes quota before writing (ENOSPC, transaction
    still usable); the replay meets it after partial work (ENOSPC, which
    fails a transaction). Same reply, but the client never saw a failed
    transaction: EAGAIN, the conflict answer, not ENOMEM."""
    h = world.h
    h.write_ok(world.g5, "data/spare")
    used = h.engine.tree.accounting.of(5).nodes
    h.set_quota(5, "nodes", used + 1)  # full: nothing more may be created
    tx = h.start(world.g5)
    assert h.err(world.g5, Op.WRITE, "data/a/b", tx=tx) == "ENOSPC"
    assert not h.engine.connections[world.g5].transactions[tx].failed
    h.ok(h.dom0, Op.RM, "/local/domain/5/data/spare")  # one node free, and a conflict
    fresh: list[TransactionView] = []
    restarted = TransactionView.restarted
    monkeypatch.setattr(TransactionView, "restarted",
                        lambda tx: fresh.append(restarted(tx)) or fresh[-1])
    assert h.end(world.g5, tx) == "EAGAIN"
    assert [view.failed for view in fresh] == [True]


# --------------------------------------------------------- no side effects


def test_a_failed_replay_changes_nothing_outside(world: World) -> None:
    """The replay runs writes, a SET_PERMS and an RM into its fresh view
    before the READ whose reply differs: no event, no node, no accounting,
    no generation, no write credit, no domain record, no journal mark."""
    h = world.h
    watcher = h.engine.connect_socket()
    h.watch(watcher, "/", "all")
    h.write_ok(h.dom0, "/local/domain/5/data/seen", b"1")
    h.write_ok(world.g5, "data/gone")
    tx = h.start(world.g5)
    h.write_ok(world.g5, "data/new/deep", b"x", tx=tx)
    assert h.set_perms(world.g5, "data/new", "n5", "r6", tx=tx) == "OK"
    h.ok(world.g5, Op.RM, "data/gone", tx=tx)
    assert h.read(world.g5, "data/seen", tx=tx) == b"1"
    h.write_ok(h.dom0, "/local/domain/5/data/seen", b"2")
    h.events(watcher)
    h.engine.take_touched()
    nodes = {path: (n.value, n.perms, n.generation, list(n.children))
             for path, n in h.engine.tree.nodes.items()}
    usage, generation = _usage(h), h.engine.tree.generation
    credit = {d: c.credit for d, c in h.engine.write_rate.domains.items()}
    domains = set(h.engine.domains.domains)
    assert h.end(world.g5, tx) == "EAGAIN"
    assert h.events(watcher) == []
    assert {path: (n.value, n.perms, n.generation, list(n.children))
            for path, n in h.engine.tree.nodes.items()} == nodes
    assert h.engine.tree.generation == generation
    usage[5] = (*usage[5][:3], usage[5][3] - 1)  # the transaction ended
    assert _usage(h) == usage
    assert {d: c.credit for d, c in h.engine.write_rate.domains.items()} == credit
    assert set(h.engine.domains.domains) == domains
    assert h.engine.take_touched() == ({5}, False)  # the END itself, as any END


def test_a_replayed_commit_journals_only_its_changes(h: Harness) -> None:
    h.write_ok(h.dom0, "/j")
    other = h.engine.connect_socket()
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/j/a", b"1", tx=tx)
    h.write_ok(other, "/j/b", b"2")
    h.engine.tree.changes = []
    assert h.end(h.dom0, tx) == "OK"
    changed = sorted(change[2] for change in h.engine.tree.changes)  # type: ignore[misc]
    assert changed == ["/j", "/j/a"]


# -------------------------------------------------------------- boot storm


def _vm_requests(domid: int) -> list[tuple[int, tuple[str | bytes, ...]]]:
    """The shape of one VM's creation by a toolstack, in one transaction."""
    home = f"/local/domain/{domid}"
    vm = f"/vm/uuid-{domid}"
    return [
        (Op.MKDIR, (home,)),
        (Op.SET_PERMS, (home, "n0", f"r{domid}")),
        (Op.WRITE, (f"{home}/name", f"guest-{domid}")),
        (Op.WRITE, (f"{home}/vm", vm)),
        (Op.MKDIR, (f"{home}/device",)),
        (Op.WRITE, (f"{home}/memory/target", "524288")),
        (Op.MKDIR, (vm,)),
        (Op.WRITE, (f"{vm}/name", f"guest-{domid}")),
        (Op.WRITE, (f"{vm}/uuid", f"uuid-{domid}")),
        (Op.MKDIR, (f"/vss/uuid-{domid}",)),
        (Op.SET_PERMS, (f"/vss/uuid-{domid}", "n0", f"r{domid}")),
        (Op.WRITE, (f"{home}/control/shutdown", "")),
    ]


def _send(h: Harness, conn: int, op: int, args: tuple[str | bytes, ...], tx: int) -> str:
    if op == Op.WRITE:
        type_, payload = h.write(conn, str(args[0]), args[1], tx=tx)
    else:
        type_, payload = h.request(conn, op, *args, tx=tx)
    return "OK" if type_ == op else payload.rstrip(b"\0").decode()


def _storm(h: Harness, count: int, extra: dict[int, list]) -> list[str]:
    """``count`` toolstack connections create a VM each; their transactions
    all start, then run request by request round-robin, then all commit."""
    for path in ("/local/domain", "/vm", "/vss"):
        h.ok(h.dom0, Op.MKDIR, path)
    conns = [h.engine.connect_socket() for _ in range(count)]
    txs = [h.start(conn) for conn in conns]
    plans = [extra.get(i, []) + _vm_requests(i + 1) for i in range(count)]
    for step in range(max(len(plan) for plan in plans)):
        for conn, tx, plan in zip(conns, txs, plans, strict=True):
            if step < len(plan):
                assert _send(h, conn, *plan[step], tx=tx) == "OK"
    return [h.end(conn, tx) for conn, tx in zip(conns, txs, strict=True)]


def test_boot_storm_commits_every_transaction(h: Harness) -> None:
    watcher = h.engine.connect_socket()
    h.watch(watcher, "/vm", "vm")
    results = _storm(h, 50, {})
    assert results == ["OK"] * 50
    assert sorted(h.directory(h.dom0, "/local/domain"), key=int) == [
        str(i) for i in range(1, 51)
    ]
    assert len(h.directory(h.dom0, "/vm")) == len(h.directory(h.dom0, "/vss")) == 50
    for domid in range(1, 51):
        assert h.read(h.dom0, f"/local/domain/{domid}/name") == f"guest-{domid}".encode()
        assert h.perms(h.dom0, f"/vss/uuid-{domid}") == ["n0", f"r{domid}"]
    events = h.events(watcher)
    assert events[0] == ("/vm", "vm")  # the storm's set-up
    assert len(events[1:]) == 50 * 3 == len(set(events[1:]))
    assert h.consistent() == []


def test_boot_storm_readers_of_a_changed_node_get_eagain(h: Harness) -> None:
    """One in five reads a shared node that the others overwrite: those are
    EAGAIN (their read is stale by the time they commit); the rest commit,
    the last of the writers' values winning."""
    h.write_ok(h.dom0, "/tool/last", b"none")
    extra = {
        i: [(Op.READ, ("/tool/last",))] if i % 5 == 4 else [(Op.WRITE, ("/tool/last", str(i)))]
        for i in range(50)
    }
    results = _storm(h, 50, extra)
    assert results == ["EAGAIN" if i % 5 == 4 else "OK" for i in range(50)]
    assert h.read(h.dom0, "/tool/last") == b"48"
    assert len(h.directory(h.dom0, "/local/domain")) == 40
    assert h.consistent() == []


def test_the_storm_in_cs_model_mostly_conflicts() -> None:
    h = Harness(Config(replay_max_requests=0))
    results = _storm(h, 10, {})
    assert results == ["OK"] + ["EAGAIN"] * 9


# ------------------------------------------------------ serializability


_PATHS = ("/a", "/a/b", "/a/c", "/d")
_KINDS = ("start", "start", "end", "read", "write", "write", "mkdir", "rm", "dir", "perms",
          "getperms")
_STEPS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(_KINDS), st.sampled_from(_PATHS),
              st.sampled_from(["", "1", "2"])),
    min_size=20,
    max_size=80,
)


def _request(kind: str, path: str, value: str) -> tuple[int, bytes]:
    if kind == "write":
        return Op.WRITE, f"{path}\0{value}".encode()
    if kind == "perms":
        return Op.SET_PERMS, f"{path}\0n0\0r{value or 0}\0".encode()
    op = {"read": Op.READ, "mkdir": Op.MKDIR, "rm": Op.RM, "dir": Op.DIRECTORY,
          "getperms": Op.GET_PERMS}[kind]
    return op, f"{path}\0".encode()


def _tree(h: Harness) -> dict[str, tuple[bytes, object, list[str]]]:
    return {path: (node.value, node.perms, list(node.children))
            for path, node in h.engine.tree.nodes.items()}


@settings(max_examples=300, deadline=None)
@given(steps=_STEPS)
def test_committed_transactions_are_serializable(steps) -> None:
    """Random interleavings of small transactions on a few paths: every
    transaction that commits got exactly the replies that running it alone
    at its commit point gives (a second engine runs that serial history),
    and both end with the same tree (child order included) and the same
    watch events."""
    real, serial = Harness(), Harness()
    conns = [real.engine.connect_socket() for _ in range(3)]
    watchers = [h.engine.connect_socket() for h in (real, serial)]
    for h, watcher in zip((real, serial), watchers, strict=True):
        h.watch(watcher, "/", "w")
    open_tx: dict[int, tuple[int, list[tuple[int, bytes, tuple[int, bytes]]]]] = {}
    for who, kind, path, value in steps:
        conn = conns[who]
        if kind == "start":
            if who not in open_tx:
                open_tx[who] = (real.start(conn), [])
            continue
        if kind == "end":
            if who in open_tx:
                tx, log = open_tx.pop(who)
                result = real.end(conn, tx)
                assert result in ("OK", "EAGAIN")
                if result == "OK":
                    alone = serial.start(serial.dom0)
                    for op, payload, reply in log:
                        assert serial.raw(serial.dom0, op, payload, alone) == reply
                    assert serial.end(serial.dom0, alone) == "OK"
            continue
        op, payload = _request(kind, path, value)
        if who in open_tx:
            tx, log = open_tx[who]
            log.append((op, payload, real.raw(conn, op, payload, tx)))
        else:
            assert real.raw(conn, op, payload) == serial.raw(serial.dom0, op, payload)
    assert _tree(real) == _tree(serial)
    assert real.events(watchers[0]) == serial.events(watchers[1])
    assert real.consistent() == []
