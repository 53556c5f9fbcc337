"""The state image: snapshot and journal records restore an equal state (issue 5)."""

from __future__ import annotations

import cbor2
from engine_harness import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.effects import AttachRing
from pyxenstored.persist import image
from pyxenstored.protocol.ops import Op


def through_cbor(plain: image.Plain) -> image.Plain:
    decoded: image.Plain = cbor2.loads(cbor2.dumps(plain))
    return decoded


def comparable(h: Harness) -> image.Plain:
    """The durable state without connection ids (they are renumbered)."""
    state = image.snapshot(h.engine)
    for record in state["domains"]:
        if record["conn"] is not None:
            del record["conn"]["order"]
    return state


def restarted(h: Harness, batches: list[image.Plain] | None = None,
              base: image.Plain | None = None) -> Harness:
    """A new daemon restored from ``h``'s snapshot, or from ``base`` plus ``batches``."""
    fresh = Harness()
    saved = base if batches is not None else through_cbor(image.snapshot(h.engine))
    image.restore(fresh.engine, saved, batches or [])
    return fresh


def guest_scene(h: Harness) -> int:
    h.write_ok(h.dom0, "/local/domain/5", b"")
    h.set_perms(h.dom0, "/local/domain/5", "n5")
    guest = h.introduce(5, port=9)
    h.write_ok(guest, "data/a", b"1")
    h.watch(guest, "data", "tok")
    h.watch(guest, "/local/domain/5/other", "abs", "1")
    return guest


def test_snapshot_restores_nodes_domains_watches_and_quotas(h: Harness) -> None:
    guest_scene(h)
    h.set_quota(5, "nodes", 77)
    h.ok(h.dom0, Op.SET_QUOTA, "watches", "50")
    fresh = restarted(h)
    assert comparable(fresh) == comparable(h)
    assert fresh.consistent() == []
    assert fresh.engine.domains.get(5).hard_quotas["nodes"] == 77
    assert fresh.engine.config.hard_quotas["watches"] == 50
    assert fresh.read(fresh.dom0, "/local/domain/5/data/a") == b"1"


def test_restored_ring_is_attached_and_each_watch_fires_once(h: Harness) -> None:
    guest_scene(h)
    fresh = restarted(h)
    domain = fresh.engine.domains.get(5)
    assert domain is not None and domain.conn_id is not None
    assert AttachRing(5, domain.conn_id, 9) in fresh.engine.take_effects()
    # Relative watches come back relative, in registration order.
    assert fresh.events(domain.conn_id) == [("data", "tok"), ("/local/domain/5/other", "abs")]
    fresh.write_ok(fresh.dom0, "/local/domain/5/data/b", b"2")
    assert fresh.events(domain.conn_id) == [("data/b", "tok")]
    assert fresh.engine.tree.accounting.of(5).watches == 2


def test_open_transaction_of_a_guest_gets_eagain_after_restart(h: Harness) -> None:
    guest = guest_scene(h)
    tx = h.start(guest)
    h.write_ok(guest, "data/in-tx", b"x", tx=tx)
    fresh = restarted(h)
    conn = fresh.engine.domains.get(5).conn_id
    fresh.events(conn)
    # Any request naming it, then its end: EAGAIN, so the client retries.
    assert fresh.result(conn, Op.READ, "data/a", tx=tx) == "EAGAIN"
    assert fresh.end(conn, tx) == "EAGAIN"
    assert fresh.end(conn, tx) == "ENOENT"
    # Nothing of it was applied, and a new transaction gets a fresh id.
    assert fresh.result(conn, Op.READ, "data/in-tx") == "ENOENT"
    new_tx = fresh.start(conn)
    assert new_tx != tx
    fresh.write_ok(conn, "data/in-tx", b"y", tx=new_tx)
    assert fresh.end(conn, new_tx) == "OK"


def test_lost_transaction_ids_are_not_reused(h: Harness) -> None:
    guest = guest_scene(h)
    first = h.start(guest)
    fresh = restarted(h)
    conn = fresh.engine.domains.get(5).conn_id
    assert fresh.start(conn) != first


def test_released_domain_is_gone_after_replay(h: Harness) -> None:
    base = through_cbor(image.snapshot(h.engine))
    h.engine.tree.changes = []
    guest_scene(h)
    h.ok(h.dom0, Op.RELEASE, "5")
    batch = image.take_batch(h.engine, 0)
    assert batch is not None
    fresh = restarted(h, [through_cbor(batch)], base)
    assert fresh.engine.domains.get(5) is None
    assert comparable(fresh) == comparable(h)


def test_socket_watches_are_not_restored(h: Harness) -> None:
    h.watch(h.dom0, "/x", "t")
    fresh = restarted(h)
    assert all(not watches for watches in fresh.engine.watches.by_path.values())
    assert fresh.engine.watches.by_path == {}


# Operations for the replay property: (who, op, path, extra).
_PATHS = st.sampled_from(["/a", "/a/b", "/a/b/c", "/d", "data/x", "data", "x/y/z"])
_STEP = st.tuples(
    st.sampled_from(["dom0", "guest"]),
    st.sampled_from(["write", "mkdir", "rm", "perms", "watch", "unwatch", "tx", "commit",
                     "abort", "quota"]),
    _PATHS,
    st.binary(max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_STEP, max_size=40), cut=st.integers(0, 40))
def test_any_sequence_replays_to_the_live_state(
    steps: list[tuple[str, str, str, bytes]], cut: int
) -> None:
    """Snapshot at any point plus the journal of what followed gives the live state."""
    h = Harness()
    guest_scene(h)
    conns = {"dom0": h.dom0, "guest": h.engine.domains.get(5).conn_id}
    open_tx: dict[str, int] = {}
    base: image.Plain | None = None
    batches: list[image.Plain] = []
    journaled = 0
    for index, (who, op, path, value) in enumerate(steps + [("dom0", "none", "", b"")]):
        if index == min(cut, len(steps)):
            base = through_cbor(image.snapshot(h.engine))
            h.engine.tree.changes = []
            h.engine.take_touched()
            journaled = h.engine.tree.generation
        conn = conns[who]
        tx = open_tx.get(who, 0)
        if op == "write":
            h.write(conn, path, value, tx=tx)
        elif op == "mkdir":
            h.request(conn, Op.MKDIR, path, tx=tx)
        elif op == "rm":
            h.request(conn, Op.RM, path, tx=tx)
        elif op == "perms":
            h.request(conn, Op.SET_PERMS, path, "r5", "b0", tx=tx)
        elif op == "watch":
            h.request(conn, Op.WATCH, path, value.hex())
        elif op == "unwatch":
            h.request(conn, Op.UNWATCH, path, value.hex())
        elif op == "tx" and not tx:
            open_tx[who] = h.start(conn)
        elif op in ("commit", "abort") and tx:
            h.end(conn, open_tx.pop(who), commit=op == "commit")
        elif op == "quota":
            h.set_quota(5, "nodes", len(value) + 3)
        h.drain(conn)
        if base is not None:
            batch = image.take_batch(h.engine, journaled)
            if batch is not None:
                batches.append(through_cbor(batch))
                journaled = batch["g"]
    assert base is not None
    replayed = restarted(h, batches, base)
    assert comparable(replayed) == comparable(h)
    assert replayed.consistent() == []
    from_snapshot = restarted(h)
    assert comparable(from_snapshot) == comparable(h)
