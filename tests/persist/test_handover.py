"""The live-update image: the whole state crosses, connections included (issue 6)."""

from __future__ import annotations

import cbor2
from engine_harness import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.persist import handover, image
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet


def handed_over(h: Harness, now: float = 100.0, later: float = 500.0) -> Harness:
    saved = handover.handover_out(h.engine, now, {}, {}, {}, {})
    fresh = Harness()
    fresh.engine = Engine(Config())
    fresh.engine.set_time(later)
    handover.handover_in(fresh.engine, cbor2.loads(cbor2.dumps(saved)), later)
    fresh.dom0 = h.dom0
    return fresh


def whole_state(engine: Engine) -> dict[str, object]:
    conns = {
        conn_id: (
            conn.domid, conn.is_socket, sorted((w.path, w.token, w.depth) for w in
                                               conn.watches.values()),
            sorted(conn.transactions), conn.outbox.pending_replies(),
            [m.data for m in conn.outbox.messages],
        )
        for conn_id, conn in engine.connections.items()
    }
    usage = {d: (u.nodes, u.memory, u.watches, u.transactions)
             for d, u in engine.tree.accounting.usage.items()
             if (u.nodes, u.memory, u.watches, u.transactions) != (0, 0, 0, 0)}
    return {"store": image.snapshot(engine), "conns": conns, "usage": usage}


def scene(h: Harness) -> tuple[int, int]:
    h.write_ok(h.dom0, "/local/domain/5", b"")
    h.set_perms(h.dom0, "/local/domain/5", "n5")
    guest = h.introduce(5, port=9)
    h.watch(guest, "data", "g")
    h.watch(h.dom0, "/local", "d")
    return guest, h.start(h.dom0)


def test_everything_crosses(h: Harness) -> None:
    guest, tx = scene(h)
    h.write_ok(h.dom0, "/local/x", b"in-tx", tx=tx)
    h.engine.handle(guest, Packet(Op.WRITE, 77, 0, b"data/q\0v"))  # its output stays queued
    fresh = handed_over(h)
    assert whole_state(fresh.engine) == whole_state(h.engine)
    assert fresh.consistent() == []
    # The transaction goes on where it was.
    assert fresh.read(h.dom0, "/local/x", tx=tx) == b"in-tx"
    assert fresh.end(h.dom0, tx) == "OK"
    assert fresh.read(h.dom0, "/local/x") == b"in-tx"


def test_queued_reply_for_the_requester_goes_last(h: Harness) -> None:
    scene(h)
    saved = handover.handover_out(h.engine, 0.0, {}, {}, {h.dom0: [b"OK-message"]}, {})
    entry = next(c for c in saved["connections"] if c["conn_id"] == h.dom0)
    assert entry["output"][-1][0] == b"OK-message"


def test_event_ages_survive_a_new_clock(h: Harness) -> None:
    guest, _ = scene(h)
    h.engine.set_time(100.0)
    h.write_ok(h.dom0, "/local/domain/5/data/e", b"")
    fresh = handed_over(h, now=130.0, later=10.0)
    conn = fresh.engine.connections[guest]
    assert [m.queued_at for m in conn.outbox.messages][-1] == -20.0


_OPS = st.lists(st.tuples(st.sampled_from(["w", "rm", "tx", "txw", "end", "watch"]),
                          st.sampled_from(["/a", "/a/b", "/c", "/local/domain/5/data/z"])),
                max_size=30)


@settings(max_examples=100, deadline=None)
@given(ops=_OPS)
def test_any_state_crosses(ops: list[tuple[str, str]]) -> None:
    h = Harness()
    guest, tx = scene(h)
    open_tx = tx
    for op, path in ops:
        if op == "w":
            h.write(h.dom0, path, b"v")
        elif op == "rm":
            h.request(h.dom0, Op.RM, path)
        elif op == "tx" and not open_tx:
            open_tx = h.start(h.dom0)
        elif op == "txw" and open_tx:
            h.write(h.dom0, path, b"t", tx=open_tx)
        elif op == "end" and open_tx:
            h.end(h.dom0, open_tx)
            open_tx = 0
        elif op == "watch":
            h.request(guest, Op.WATCH, path, "tok")
    assert whole_state(handed_over(h).engine) == whole_state(h.engine)


def test_a_transaction_stays_replayable_across_a_live_update(h: Harness) -> None:
    """The recording crosses with the transaction: after the update a
    conflicting commit is still replayed (spec 4.3), and one whose replies
    would differ still answers EAGAIN."""
    guest, tx = scene(h)
    h.write_ok(h.dom0, "/local/domain/5/a", b"mine", tx=tx)
    assert h.err(h.dom0, Op.READ, "/local/domain/5/none", tx=tx) == "ENOENT"
    stale = h.start(h.dom0)
    assert h.read(h.dom0, "/local/domain/5", tx=stale) == b""
    h.write_ok(h.dom0, "/local/domain/5/b", b"other")  # conflicts with both
    h.write_ok(h.dom0, "/local/domain/5", b"changed")
    fresh = handed_over(h)
    moved = fresh.engine.connections[h.dom0].transactions[tx]
    assert moved.recording == h.engine.connections[h.dom0].transactions[tx].recording
    assert moved.replay_limit == Config().replay_max_requests
    assert moved.conflicts()
    assert fresh.end(h.dom0, tx) == "OK"
    assert fresh.directory(h.dom0, "/local/domain/5") == ["b", "a"]
    assert fresh.read(h.dom0, "/local/domain/5/a") == b"mine"
    assert fresh.end(h.dom0, stale) == "EAGAIN"
    assert fresh.consistent() == []


def test_an_image_without_a_recording_is_not_replayable(h: Harness) -> None:
    """An image from a version before replay: its transactions answer a
    conflict with EAGAIN, as before."""
    _, tx = scene(h)
    h.write_ok(h.dom0, "/local/domain/5/a", b"mine", tx=tx)
    h.write_ok(h.dom0, "/local/domain/5/b", b"other")
    saved = handover.handover_out(h.engine, 0.0, {}, {}, {}, {})
    for conn in saved["connections"]:
        for entry in conn["transactions"]:
            del entry["recording"], entry["replay_limit"]
    fresh = Harness()
    fresh.engine = Engine(Config())
    handover.handover_in(fresh.engine, cbor2.loads(cbor2.dumps(saved)), 0.0)
    fresh.dom0 = h.dom0
    assert fresh.engine.connections[h.dom0].transactions[tx].recording is None
    assert fresh.end(h.dom0, tx) == "EAGAIN"
