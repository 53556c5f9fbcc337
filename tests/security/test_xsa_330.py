"""XSA-330 (CVE-2020-29485): oxenstored leaked memory in RESET_WATCHES (the
watch trie kept empty entries).

Attack: a guest loops WATCH (many paths) + RESET_WATCHES, thousands of times,
to grow the daemon's watch index without bound, or to keep receiving events
from watches it has reset.

Expected: after every RESET_WATCHES the guest has no registrations left
anywhere (the registry's ``by_path`` index holds nothing of it, its watch
count is 0, so the watch quota is never exhausted by the loop), and later
changes to those paths deliver it no events.

Layer: the pure engine.
"""

from __future__ import annotations

from engine_harness import World

from pyxenstored.protocol.ops import Op

LOOPS = 300


def test_watch_reset_loop_leaves_nothing(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.watch(d0, "/pub", "dom0-keeps")  # someone else's watch must survive
    baseline = dict(h.engine.watches.by_path)
    quota = 128
    for loop in range(LOOPS):
        # Up to the quota (127 watches) each time: a leak would hit ENOSPC.
        for i in range(quota - 1):
            path = f"w{loop % 7}/{i}" if i % 2 else f"/pub/x{i}/{loop}"
            h.ok(g5, Op.WATCH, path, f"t{i}")
        assert h.ok(g5, Op.RESET_WATCHES) == b"OK\0"
        h.events(g5)  # the initial events
        assert h.engine.watches.by_path == baseline
        assert h.engine.connections[g5].watches == {}
        assert h.engine.tree.accounting.of(5).watches == 0
    assert h.err(g5, Op.UNWATCH, "w0/1", "t1") == "ENOENT"
    # No stale events for the reset watches; dom0's still works.
    h.write_ok(d0, "/local/domain/5/w0/1", b"v")
    h.write_ok(d0, "/pub/x2/0", b"v")
    assert h.events(g5) == []
    assert h.events(d0) == [("/pub/x2/0", "dom0-keeps")]
    assert h.engine.connections[g5].outbox.size == 0


def test_events_queued_before_reset_are_not_followed_by_more(world: World) -> None:
    """Events already queued when RESET_WATCHES arrives may still be read,
    but nothing new is queued afterwards; a new watch with the same path
    and token starts clean."""
    h, d0, g5 = world.h, world.dom0, world.g5
    h.watch(g5, "data", "tok")
    h.write_ok(d0, "/local/domain/5/data", b"1")
    h.ok(g5, Op.RESET_WATCHES)
    h.events(g5)
    for i in range(5):
        h.write_ok(d0, "/local/domain/5/data", str(i).encode())
    assert h.events(g5) == []
    h.watch(g5, "data", "tok")
    h.write_ok(d0, "/local/domain/5/data", b"x")
    assert h.events(g5) == [("data", "tok")]
    assert len(h.engine.watches.by_path["/local/domain/5/data"]) == 1
