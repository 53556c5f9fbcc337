"""XSA-425 (CVE-2022-42330): use-after-free in C's main loop when RELEASE
(guest soft reset / kexec) freed a connection that still had I/O queued.

Attack: dom0 RELEASEs a domain while its connection has unread replies and
watch events queued, open transactions, watches (including one on its own
home, which the cleanup removes), and while another guest watches its tree;
then the toolstack introduces the same domid again.

Expected: no exception and no output left for the old connection: its
queue is discarded, its watches and transactions are gone (they get none of
the cleanup's events), the shell is told to detach the ring; the other
guest's watch sees the cleanup; the domid can be introduced again with a
fresh, empty connection, and everyone else is served.

Layer: the pure engine. The ring variant (full rings, half a request,
pending events) against C/O/py is in tests/fakexen/test_fakexen_advisories.py.
"""

from __future__ import annotations

from engine_harness import World

from pyxenstored.effects import DetachRing
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet


def test_release_with_queued_io(world: World) -> None:
    h, d0, g5, g6 = world.h, world.dom0, world.g5, world.g6
    engine = h.engine
    h.ok(d0, Op.SET_PERMS, "/local/domain/5", "n5", "r6")
    h.ok(g6, Op.WATCH, "/local/domain/5", "six")
    h.events(g6)
    # Guest 5 queues up replies and events and never takes them.
    for i in range(5):
        engine.handle(g5, Packet(Op.WATCH, 100 + i, 0, f"data\0t{i}\0".encode()))
        engine.handle(g5, Packet(Op.READ, 200 + i, 0, b"data\0"))
    engine.handle(g5, Packet(Op.TRANSACTION_START, 300, 0, b"\0"))
    for i in range(20):
        h.write_ok(d0, "/local/domain/5/data", str(i).encode())
    h.events(g6)
    assert engine.queued_replies(g5) == 11
    engine.take_effects()
    h.ok(d0, Op.RELEASE, "5")
    assert DetachRing(5, g5) in engine.take_effects()
    assert g5 not in engine.connections
    assert engine.take_output(g5) == b""
    assert engine.queued_replies(g5) == 0
    assert not any(w.conn_id == g5 for ws in engine.watches.by_path.values() for w in ws)
    assert g5 not in engine.take_dirty()
    # The home's removal (SUBTREE); its child fires EXACT, for exact watchers only.
    assert h.events(g6) == [("/local/domain/5", "six")]
    assert h.ok(d0, Op.IS_DOMAIN_INTRODUCED, "5") == b"F\0"
    # Everyone else carries on.
    h.write_ok(g6, "alive", b"yes")
    assert h.read(d0, "/local/domain/6/alive") == b"yes"
    # Soft reset: the same domid again, on a fresh connection.
    h.write_ok(d0, "/local/domain/5")
    h.ok(d0, Op.SET_PERMS, "/local/domain/5", "n5")
    again = h.introduce(5)
    assert again != g5
    assert engine.take_output(again) == b""
    assert engine.connections[again].watches == {}
    assert engine.connections[again].transactions == {}
    h.write_ok(again, "data", b"new")
    assert h.read(d0, "/local/domain/5/data") == b"new"
    assert h.consistent() == []


def test_release_twice_and_release_unknown(world: World) -> None:
    h, d0 = world.h, world.dom0
    h.ok(d0, Op.RELEASE, "5")
    assert h.err(d0, Op.RELEASE, "5") == "ENOENT"
    assert h.err(d0, Op.RELEASE, "77") == "ENOENT"
    assert h.err(d0, Op.RELEASE, "0") == "EINVAL"
    assert h.err(world.g6, Op.RELEASE, "6") == "EACCES"
    h.write_ok(world.g6, "still", b"ok")
