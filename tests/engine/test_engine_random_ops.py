"""Random op sequences keep the store invariants (XSA-414/415/421, spec 1.6 check).

After every request: every node's parent lists it, every listed child
exists, per-domain accounting equals a recount (``check_tree == []``), and
the watch/transaction counters match the connections.
"""

from engine_harness import Harness, World
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxenstored.protocol.ops import Op
from pyxenstored.store.consistency import check_tree

WHO = st.sampled_from(["dom0", "g5", "g6"])
NAME = st.sampled_from(["a", "b", "c"])
PATH = st.one_of(
    st.lists(NAME, min_size=1, max_size=4).map(lambda parts: "/".join(parts)),  # relative
    st.lists(NAME, min_size=0, max_size=3).map(
        lambda parts: "/".join(["/local/domain/5", *parts])
    ),
    st.lists(NAME, min_size=0, max_size=3).map(
        lambda parts: "/".join(["/local/domain/6", *parts])
    ),
    st.lists(NAME, min_size=0, max_size=3).map(lambda parts: "/".join(["/pub", *parts])),
)
PERMS = st.lists(
    st.sampled_from(["n0", "r0", "b0", "n5", "r5", "w5", "b5", "n6", "r6", "b6"]),
    min_size=1,
    max_size=4,
)

ACTION = st.one_of(
    st.tuples(st.just("write"), WHO, PATH, st.binary(max_size=8), st.booleans()),
    st.tuples(st.just("mkdir"), WHO, PATH, st.booleans()),
    st.tuples(st.just("rm"), WHO, PATH, st.booleans()),
    st.tuples(st.just("set_perms"), WHO, PATH, PERMS, st.booleans()),
    st.tuples(st.just("read"), WHO, PATH, st.booleans()),
    st.tuples(st.just("start"), WHO),
    st.tuples(st.just("end"), WHO, st.booleans()),
    st.tuples(st.just("watch"), WHO, PATH),
    st.tuples(st.just("reset_watches"), WHO),
    st.tuples(st.just("quota"), st.sampled_from([5, 6]), st.integers(0, 12)),
    st.tuples(st.just("tx_quota"), st.sampled_from([5, 6]), st.integers(0, 6)),
    st.tuples(st.just("release"), st.sampled_from([5, 6])),
    st.tuples(st.just("introduce"), st.sampled_from([5, 6])),
    st.tuples(st.just("set_target"), st.sampled_from([(5, 6), (6, 5)])),
)


def check_invariants(world: World) -> None:
    h = world.h
    engine = h.engine
    assert check_tree(engine.tree) == []
    for conn in engine.connections.values():
        if conn.is_socket:
            continue
        usage = engine.tree.accounting.of(conn.domid)
        assert usage.watches == len(conn.watches)
        assert usage.transactions == len(conn.transactions)
    for path, watches in engine.watches.by_path.items():
        for watch in watches:
            assert engine.connections[watch.conn_id].watches[(path, watch.token)] is watch


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(actions=st.lists(ACTION, max_size=60))
def test_random_sequences_keep_invariants(actions: list[tuple]) -> None:
    world = World(Harness())
    h = world.h
    conns = {"dom0": world.dom0, "g5": world.g5, "g6": world.g6}
    txs: dict[str, int] = {}

    for action in actions:
        kind = action[0]
        if kind in ("write", "mkdir", "rm", "set_perms", "read", "start", "end", "watch",
                    "reset_watches") and action[1] not in conns:
            continue
        if kind in ("write", "mkdir", "rm", "set_perms", "read"):
            who, path = action[1], action[2]
            tx = txs.get(who, 0) if action[-1] else 0
            conn = conns[who]
            if kind == "write":
                h.write(conn, path, action[3], tx=tx)
            elif kind == "mkdir":
                h.request(conn, Op.MKDIR, path, tx=tx)
            elif kind == "rm":
                h.request(conn, Op.RM, path, tx=tx)
            elif kind == "set_perms":
                h.request(conn, Op.SET_PERMS, path, *action[3], tx=tx)
            else:
                h.request(conn, Op.READ, path, tx=tx)
        elif kind == "start":
            who = action[1]
            if who not in txs:
                type_, payload = h.request(conns[who], Op.TRANSACTION_START, "")
                if type_ == Op.TRANSACTION_START:
                    txs[who] = int(payload.rstrip(b"\0"))
        elif kind == "end":
            who = action[1]
            if who in txs:
                result = h.end(conns[who], txs.pop(who), commit=action[2])
                assert result in ("OK", "EAGAIN", "ENOSPC", "ENOMEM")
        elif kind == "watch":
            h.request(conns[action[1]], Op.WATCH, action[2], "tok")
        elif kind == "reset_watches":
            who = action[1]
            h.request(conns[who], Op.RESET_WATCHES, "", tx=txs.pop(who, 0))
        elif kind == "quota":
            h.set_quota(action[1], "nodes", action[2])
        elif kind == "tx_quota":
            h.set_quota(action[1], "transaction-nodes", action[2])
        elif kind == "release":
            domid = action[1]
            who = f"g{domid}"
            if who in conns:
                h.ok(h.dom0, Op.RELEASE, str(domid))
                del conns[who]
                txs.pop(who, None)
        elif kind == "introduce":
            domid = action[1]
            conns[f"g{domid}"] = h.introduce(domid)
            txs.pop(f"g{domid}", None)  # re-introduction drops transactions
        elif kind == "set_target":
            domid, target = action[1]
            h.request(h.dom0, Op.SET_TARGET, str(domid), str(target))
        for conn in conns.values():
            h.events(conn)
        check_invariants(world)

    for who, tx in list(txs.items()):
        h.end(conns[who], tx)
        check_invariants(world)
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"
    assert check_tree(h.engine.tree) == []


TX_ACTION = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(["dom0", "g5"]), PATH, st.binary(max_size=4)),
    st.tuples(st.just("mkdir"), st.sampled_from(["dom0", "g5"]), PATH),
    st.tuples(st.just("rm"), st.sampled_from(["dom0", "g5"]), PATH),
    st.tuples(st.just("set_perms"), st.sampled_from(["dom0", "g5"]), PATH, PERMS),
    st.tuples(st.just("read"), st.sampled_from(["dom0", "g5"]), PATH),
    st.tuples(st.just("directory"), st.sampled_from(["dom0", "g5"]), PATH),
    st.tuples(st.just("get_perms"), st.sampled_from(["dom0", "g5"]), PATH),
)


def snapshot(h: Harness) -> dict:
    return {
        path: (node.value, node.perms, list(node.children))
        for path, node in h.engine.tree.nodes.items()
    }


def replay(world: World, who: str, actions: list[tuple], in_tx: bool) -> list[tuple[int, bytes]]:
    h = world.h
    conn = world.conn(who)
    tx = h.start(conn) if in_tx else 0
    replies = []
    for kind, actor, path, *rest in actions:
        if actor != who:
            continue
        if kind == "write":
            replies.append(h.write(conn, path, rest[0], tx=tx))
        elif kind == "set_perms":
            replies.append(h.request(conn, Op.SET_PERMS, path, *rest[0], tx=tx))
        else:
            op = {"mkdir": Op.MKDIR, "rm": Op.RM, "read": Op.READ, "directory": Op.DIRECTORY,
                  "get_perms": Op.GET_PERMS}[kind]
            replies.append(h.request(conn, op, path, tx=tx))
    if in_tx:
        assert h.end(conn, tx) == "OK"
    return replies


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(actions=st.lists(TX_ACTION, max_size=30), who=st.sampled_from(["dom0", "g5"]))
def test_uncontended_transaction_equals_direct_execution(actions: list[tuple], who: str) -> None:
    """Spec 4.2: with no interference, a committed transaction gives the same replies
    and the same tree (values, permissions, child order) as running the ops directly."""
    direct, transacted = World(Harness()), World(Harness())
    direct_replies = replay(direct, who, actions, in_tx=False)
    tx_replies = replay(transacted, who, actions, in_tx=True)
    assert tx_replies == direct_replies
    assert snapshot(transacted.h) == snapshot(direct.h)
    assert check_tree(transacted.h.engine.tree) == []
    for domid in (0, 5, 6):
        tx_usage = transacted.h.engine.tree.accounting.of(domid)
        direct_usage = direct.h.engine.tree.accounting.of(domid)
        assert (tx_usage.nodes, tx_usage.memory) == (direct_usage.nodes, direct_usage.memory)
