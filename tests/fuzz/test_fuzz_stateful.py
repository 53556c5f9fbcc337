"""Stateful fuzzing: the engine against the reference model (issue #4).

Three connections (the dom0 socket, guests 5 and 6) send the same requests
to ``Engine`` and to ``fuzz.model.Model``; every message that comes out of
every connection (replies, watch events, their order) must be equal, and so
must the trees. After every step the engine's own invariants are checked:
``check_tree`` finds nothing, accounting equals a recount, generations never
exceed the global one and the global one never goes down.

Defaults: 800 examples of up to 50 steps (~15 s). ``FUZZ_EXAMPLES=5000 FUZZ_STEPS=100
pytest tests/fuzz/test_fuzz_stateful.py`` runs longer.

Not checked here: "state serialises and deserialises to an equal state" needs
the persistence format of issue #5.
"""

from __future__ import annotations

import os

import cbor2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fuzz.model import Model
from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.persist import image
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet
from pyxenstored.store.consistency import check_tree
from pyxenstored.store.permissions import owner

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "800"))
STEPS = int(os.environ.get("FUZZ_STEPS", "50"))

WHO = ("dom0", "g5", "g6")
#: A small alphabet so that collisions, conflicts and permission edges happen.
PATHS = (
    "/",
    "/a",
    "/a/b",
    "/a/b/c",
    "/b",
    "/local",
    "/local/domain",
    "/local/domain/5",
    "/local/domain/5/x",
    "/local/domain/5/x/y",
    "/local/domain/6",
    "/local/domain/6/x",
    "x",
    "x/y",
    "y",
    "@releaseDomain",
)
WATCH_PATHS = (*PATHS, "@introduceDomain")
TOKENS = ("t", "u", "")
VALUES = (b"", b"v", b"w\0z")
DOMIDS = (0, 5, 6, 0x7FF5)
NODE_OPS = (Op.READ, Op.WRITE, Op.MKDIR, Op.RM, Op.DIRECTORY, Op.GET_PERMS)

perm_lists = st.lists(
    st.tuples(st.sampled_from("nrwb"), st.sampled_from(DOMIDS)).map(lambda p: f"{p[0]}{p[1]}"),
    min_size=1,
    max_size=5,
)


def _through_cbor(plain: image.Plain) -> image.Plain:
    decoded: image.Plain = cbor2.loads(cbor2.dumps(plain))
    return decoded


def comparable(engine: Engine) -> dict[str, object]:
    """The durable state and the node usage counters, without connection ids
    (socket connections and their watches do not survive a restart)."""
    state = image.snapshot(engine)
    for record in state["domains"]:
        if record["conn"] is not None:
            del record["conn"]["order"]
    usage = {
        domid: (u.nodes, u.memory)
        for domid, u in engine.tree.accounting.usage.items()
        if (u.nodes, u.memory) != (0, 0)
    }
    return {"state": state, "usage": usage}


def _payload(*args: str) -> bytes:
    return b"".join(arg.encode() + b"\0" for arg in args)


class Driver:
    """One engine and one model fed identical requests."""

    def __init__(self) -> None:
        # The model is C's: a conflict is EAGAIN, never replayed (spec 4.3).
        self.engine = Engine(Config(replay_max_requests=0))
        self.model = Model()
        self.req_id = 0
        self.conn: dict[str, int] = {}
        dom0 = self.engine.connect_socket()
        self.conn["dom0"] = dom0
        self.model.add_connection(dom0, 0, privileged=True)
        for domid in (5, 6):
            home = f"/local/domain/{domid}"
            self.send("dom0", Op.WRITE, home.encode() + b"\0")
            self.send("dom0", Op.SET_PERMS, _payload(home, f"n{domid}"))
        for domid in (5, 6):
            self.send("dom0", Op.INTRODUCE, _payload(str(domid), "1", str(domid + 2)), model=False)
            domain = self.engine.domains.get(domid)
            assert domain is not None and domain.conn_id is not None
            self.conn[f"g{domid}"] = domain.conn_id
            self.model.add_connection(domain.conn_id, domid, privileged=False)
        # Small guest quotas so that the ">=" edges are reached.
        for domid, name, value in ((5, "watches", 4), (5, "transactions", 3), (6, "nodes", 5)):
            self.send("dom0", Op.SET_QUOTA, _payload(str(domid), name, str(value)), model=False)
            self.model.set_quota(domid, name, value)
        self.check_all()
        self.generation = self.engine.tree.generation
        # Journal from here: the base image plus every step's batch record
        # must restore to the live state (issue 5).
        self.base = _through_cbor(image.snapshot(self.engine))
        self.engine.tree.changes = []
        self.engine.take_touched()
        self.batches: list[image.Plain] = []
        self.journaled = self.engine.tree.generation

    def send(self, who: str, op: int, payload: bytes, tx_id: int = 0, model: bool = True) -> None:
        """One request to both; the requester's output must match."""
        self.req_id += 1
        conn = self.conn[who]
        self.engine.handle(conn, Packet(op, self.req_id, tx_id, payload))
        if model:
            self.model.handle(conn, op, self.req_id, tx_id, payload)
            self.compare(who)
        else:
            got = Decoder().feed(self.engine.take_output(conn))
            assert [(p.type, p.payload) for p in got] == [(op, b"OK\0")], got

    def compare(self, who: str) -> None:
        conn = self.conn[who]
        got = [(p.type, p.req_id, p.tx_id, p.payload) for p in
               Decoder().feed(self.engine.take_output(conn))]
        want = self.model.take(conn)
        assert got == want, f"{who}: engine {got} != model {want}"

    def check_all(self) -> None:
        for who in WHO:
            self.compare(who)

    def open_txs(self, who: str) -> list[int]:
        return sorted(self.model.conns[self.conn[who]].txs)

    def tx_for(self, who: str, pick: int) -> int:
        """0 (no transaction), one of the caller's open ones, or a dead id."""
        if pick == 0:
            return 0
        if pick == 9:
            return 99
        txs = self.open_txs(who)
        return txs[pick % len(txs)] if txs else 0

    def compare_trees(self) -> None:
        engine_nodes = {
            path: (node.value, tuple((p.flags, p.domid) for p in node.perms), list(node.children))
            for path, node in self.engine.tree.nodes.items()
        }
        model_nodes = {
            path: (node.value, node.perms, node.children)
            for path, node in self.model.nodes.items()
        }
        assert engine_nodes == model_nodes

    def check_invariants(self) -> None:
        tree = self.engine.tree
        assert check_tree(tree) == []
        for domid, usage in tree.accounting.usage.items():
            recount = sum(1 for node in tree.nodes.values() if owner(node.perms) == domid)
            assert usage.nodes == recount, domid
        for path, node in tree.nodes.items():
            assert node.generation <= tree.generation, path
        assert tree.generation >= self.generation
        self.generation = tree.generation
        self.compare_trees()
        self.check_persistence()

    def check_persistence(self) -> None:
        """The state serialises and deserialises to an equal state, and the
        journal replayed over the base image gives it too."""
        batch = image.take_batch(self.engine, self.journaled)
        if batch is not None:
            self.batches.append(_through_cbor(batch))
            self.journaled = batch["g"]
        live = comparable(self.engine)
        from_snapshot = Engine(Config())
        image.restore(from_snapshot, _through_cbor(image.snapshot(self.engine)), [])
        assert comparable(from_snapshot) == live
        replayed = Engine(Config())
        image.restore(replayed, self.base, self.batches)
        assert comparable(replayed) == live


class StoreMachine(RuleBasedStateMachine):
    driver: Driver

    @initialize()
    def setup(self) -> None:
        self.driver = Driver()

    @rule(
        who=st.sampled_from(WHO),
        op=st.sampled_from(NODE_OPS),
        path=st.sampled_from(PATHS),
        value=st.sampled_from(VALUES),
        tx=st.sampled_from((0, 0, 1, 2, 9)),
    )
    def node_op(self, who: str, op: int, path: str, value: bytes, tx: int) -> None:
        payload = path.encode() + b"\0" + (value if op == Op.WRITE else b"")
        self.driver.send(who, op, payload, self.driver.tx_for(who, tx))

    @rule(
        who=st.sampled_from(WHO),
        path=st.sampled_from(PATHS),
        perms=perm_lists,
        tx=st.sampled_from((0, 0, 1, 2)),
    )
    def set_perms(self, who: str, path: str, perms: list[str], tx: int) -> None:
        self.driver.send(who, Op.SET_PERMS, _payload(path, *perms), self.driver.tx_for(who, tx))

    @rule(
        who=st.sampled_from(WHO),
        path=st.sampled_from(WATCH_PATHS),
        token=st.sampled_from(TOKENS),
        depth=st.sampled_from((None, None, 0, 1, 2)),
    )
    def watch(self, who: str, path: str, token: str, depth: int | None) -> None:
        args = (path, token) if depth is None else (path, token, str(depth))
        self.driver.send(who, Op.WATCH, _payload(*args))

    @rule(who=st.sampled_from(WHO), path=st.sampled_from(WATCH_PATHS),
          token=st.sampled_from(TOKENS))
    def unwatch(self, who: str, path: str, token: str) -> None:
        self.driver.send(who, Op.UNWATCH, _payload(path, token))

    @rule(who=st.sampled_from(WHO), nested=st.sampled_from((0, 0, 0, 1)))
    def transaction_start(self, who: str, nested: int) -> None:
        open_txs = self.driver.open_txs(who)
        if len(open_txs) >= 4:  # keep steps for other rules; still past guest 5's quota
            self.driver.send(who, Op.TRANSACTION_END, b"T\0", open_txs[0])
            return
        self.driver.send(who, Op.TRANSACTION_START, b"\0", self.driver.tx_for(who, nested))

    @rule(who=st.sampled_from(WHO), pick=st.integers(1, 3), commit=st.booleans())
    def transaction_end(self, who: str, pick: int, commit: bool) -> None:
        tx = self.driver.tx_for(who, pick)
        self.driver.send(who, Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)

    @precondition(lambda self: hasattr(self, "driver"))
    @rule(who=st.sampled_from(WHO))
    def drain(self, who: str) -> None:
        """Other connections' events are taken only now, so duplicates can collapse."""
        self.driver.compare(who)

    @invariant()
    def invariants(self) -> None:
        if hasattr(self, "driver"):
            self.driver.check_invariants()

    def teardown(self) -> None:
        if hasattr(self, "driver"):
            self.driver.check_all()


def test_engine_matches_model() -> None:
    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# ----------------------------------------------------------------------------
# Minimised cases of the engine's former deviations from C, found by the
# stateful test and kept as regression tests.


def _write(d: Driver, who: str, path: str, value: bytes = b"", tx: int = 0) -> None:
    d.send(who, Op.WRITE, path.encode() + b"\0" + value, tx)


def _start(d: Driver, who: str) -> int:
    d.send(who, Op.TRANSACTION_START, b"\0")
    return d.open_txs(who)[-1]


def test_root_watch_does_not_see_special_node_set_perms() -> None:
    """Spec 5.2/5.6, C ``is_child``: ``/`` is the ancestor of absolute paths only.
    SET_PERMS @releaseDomain must not fire a watch on ``/``."""
    d = Driver()
    d.send("dom0", Op.WATCH, _payload("/", "t"))
    d.send("dom0", Op.SET_PERMS, _payload("@releaseDomain", "n0", "r32757"))


def test_initial_watch_event_collapses_into_pending_identical_event() -> None:
    """Spec 5.3, C ``do_watch`` -> ``send_event``: the initial event goes through the
    same duplicate check, so it is dropped when an identical event is still unsent."""
    d = Driver()
    d.send("g5", Op.WATCH, _payload("/local/domain/5", "t"))
    _write(d, "dom0", "/local/domain/5/x")  # g5 now has "/local/domain/5/x t" unsent
    d.send("g5", Op.WATCH, _payload("/local/domain/5/x", "t"))


def test_node_quota_refusal_keeps_transaction_usable() -> None:
    """Spec 4.1/6.1, C ``create_node``: the nodes quota is checked before anything
    is written, so the refusal leaves the transaction intact; commit gives OK,
    not ENOMEM."""
    d = Driver()
    for name in ("a", "b", "c"):
        _write(d, "g6", name)  # guest 6 owns 4 nodes, quota 5
    tx = _start(d, "g6")
    _write(d, "g6", "d", tx=tx)  # 4 + 1 >= 5: ENOSPC
    d.send("g6", Op.TRANSACTION_END, b"T\0", tx)


def test_commit_quota_check_with_zero_net_nodes() -> None:
    """Spec 4.1/6.1, C ``acc_fix_domains``: a transaction that created a node is
    refused at commit (ENOSPC) if a domain whose count it touched did not shrink
    and is at its quota, even with a net change of zero."""
    d = Driver()
    tx = _start(d, "g6")
    _write(d, "g6", "n", tx=tx)
    d.send("g6", Op.RM, b"n\0", tx)
    for name in ("/q1", "/q2", "/q3", "/q4"):  # guest 6 reaches 5 nodes, its quota
        _write(d, "dom0", name)
        d.send("dom0", Op.SET_PERMS, _payload(name, "n6"))
    d.send("g6", Op.TRANSACTION_END, b"T\0", tx)


def test_commit_fires_in_first_access_order() -> None:
    """Spec 5.2 (table, "Transaction commit: per modified node, in first-access
    order"), C ``finalize_transaction`` walks the accessed list."""
    d = Driver()
    _write(d, "dom0", "/a")
    _write(d, "dom0", "/b")
    d.send("dom0", Op.WATCH, _payload("/", "t"))
    tx = _start(d, "dom0")
    d.send("dom0", Op.READ, b"/a\0", tx)
    _write(d, "dom0", "/b", b"1", tx)
    _write(d, "dom0", "/a", b"1", tx)
    d.send("dom0", Op.TRANSACTION_END, b"T\0", tx)


def test_node_created_and_deleted_in_transaction_fires_nothing() -> None:
    """C ``watch_permitted`` at commit: no saved permissions and no node -> nobody,
    not even priv, gets the event (spec 5.4: no new or old permissions exist)."""
    d = Driver()
    d.send("dom0", Op.WATCH, _payload("/", "t"))
    tx = _start(d, "dom0")
    _write(d, "dom0", "/n", b"", tx)
    d.send("dom0", Op.RM, b"/n\0", tx)
    d.send("dom0", Op.TRANSACTION_END, b"T\0", tx)


def test_commit_filter_sees_half_applied_tree() -> None:
    """C ``finalize_transaction`` applies and fires one node at a time (first-access
    order), so x/y's filter looks for its parent x before x is committed: g6,
    which may read only x, gets x's event but not x/y's (spec 5.4/5.5)."""
    d = Driver()
    d.send("g6", Op.WATCH, _payload("/", "t"))
    tx = _start(d, "dom0")
    _write(d, "dom0", "x/y", b"", tx)
    d.send("dom0", Op.SET_PERMS, _payload("x", "n6"), tx)
    d.send("dom0", Op.TRANSACTION_END, b"T\0", tx)
    d.check_all()


def test_guest_sees_nothing_of_node_created_and_deleted_in_transaction() -> None:
    """C ``watch_permitted``: a node created and removed in one transaction has no
    saved permissions and no node at commit, so the guest gets only the event of
    its removed home, not of x (spec 5.4/5.5)."""
    d = Driver()
    d.send("g5", Op.WATCH, _payload("/", "t"))
    tx = _start(d, "g5")
    _write(d, "g5", "/local/domain/5/x", b"", tx)
    d.send("g5", Op.RM, b"/local/domain/5\0", tx)
    d.send("g5", Op.TRANSACTION_END, b"T\0", tx)
