"""XSA-484 (CVE-2026-23557): RESET_WATCHES sent inside a transaction (or the
connection being ignored while a transaction was open) hit an assert in C.

Attack: TRANSACTION_START, then RESET_WATCHES carrying that tx_id (and with
other transactions and watches open), then use the transaction again;
likewise ``ignore_connection`` (a broken ring) with transactions open.

Expected: RESET_WATCHES answers ``OK``; every transaction of the caller,
including the one it was sent in, is gone without being committed; the next
use of that tx_id is ENOENT (TRANSACTION_END too); the per-domain
transaction count is back to 0, new transactions and watches work, and
nothing else is disturbed.

Layer: the pure engine.
"""

from __future__ import annotations

from engine_harness import World

from pyxenstored.protocol.ops import Op


def test_reset_watches_inside_transaction(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.watch(g5, "data", "w")
    tx = h.start(g5)
    other = h.start(g5)
    h.write_ok(g5, "in-tx", b"v", tx=tx)
    h.write_ok(g5, "in-other", b"v", tx=other)
    dom0_tx = h.start(d0)
    assert h.request(g5, Op.RESET_WATCHES, tx=tx) == (Op.RESET_WATCHES, b"OK\0")
    assert h.engine.connections[g5].transactions == {}
    assert h.engine.tree.accounting.of(5).transactions == 0
    for t in (tx, other):
        assert h.err(g5, Op.READ, "data", tx=t) == "ENOENT"
        assert h.write(g5, "x", b"v", tx=t)[1] == b"ENOENT\0"
        assert h.end(g5, t) == "ENOENT"
    assert h.err(g5, Op.READ, "in-tx") == "ENOENT"  # never committed
    assert h.err(g5, Op.READ, "in-other") == "ENOENT"
    h.write_ok(d0, "/local/domain/5/data", b"changed")
    assert h.events(g5) == []  # the watch is gone too
    # dom0's transaction was not touched.
    h.write_ok(d0, "/d0tx", b"v", tx=dom0_tx)
    assert h.end(d0, dom0_tx) == "OK"
    # New transactions and watches work, and their ids are not reused.
    new = h.start(g5)
    assert new not in (tx, other)
    h.write_ok(g5, "after", b"v", tx=new)
    assert h.end(g5, new) == "OK"
    h.watch(g5, "data", "w")
    assert h.consistent() == []


def test_reset_watches_with_unknown_tx_id(world: World) -> None:
    """RESET_WATCHES with a tx_id that does not exist is ENOENT, as any other
    transaction-using request (C looks the transaction up first)."""
    h, g5 = world.h, world.g5
    assert h.err(g5, Op.RESET_WATCHES, tx=0x1234) == "ENOENT"
    assert h.ok(g5, Op.RESET_WATCHES) == b"OK\0"


def test_ignore_connection_with_open_transactions(world: World) -> None:
    h, g5 = world.h, world.g5
    tx = h.start(g5)
    h.write_ok(g5, "pending", b"v", tx=tx)
    h.watch(g5, "data", "w")
    h.engine.ignore_connection(g5)
    assert h.engine.connections[g5].transactions == {}
    assert h.engine.connections[g5].watches == {}
    assert h.engine.tree.accounting.of(5).transactions == 0
    assert h.engine.tree.accounting.of(5).watches == 0
    assert h.err(world.dom0, Op.READ, "/local/domain/5/pending") == "ENOENT"
    assert h.consistent() == []
