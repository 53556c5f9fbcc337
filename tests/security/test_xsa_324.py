"""XSA-324 (CVE-2020-29484): a long watch token plus a deep child path made a
watch event over 4096 bytes, which crashed (C) or wedged the connection.

Attack: WATCH with a ~4000-byte token, then cause an event on a descendant
whose path plus the token exceeds the 4096-byte payload limit (a write, an
RM of a subtree, a transaction commit).

Expected: that event is dropped (counted), never queued or half-sent; events
that fit still arrive; the watcher's and the writer's connections keep
working and the daemon does not crash.

Layer: the pure engine (queued output decoded with the real decoder, which
refuses anything over 4096).
"""

from __future__ import annotations

from engine_harness import Harness

from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import PAYLOAD_MAX

TOKEN = "T" * 4000


def test_oversized_event_dropped(h: Harness) -> None:
    guest = h.introduce(5)
    h.write_ok(h.dom0, "/local/domain/5/w")
    h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5", "n5")
    h.ok(h.dom0, Op.SET_PERMS, "/local/domain/5/w", "n5")
    for conn, path in ((h.dom0, "/local/domain/5/w"), (guest, "w")):
        h.ok(conn, Op.WATCH, path, TOKEN)
        assert h.events(conn) == [(path, TOKEN)]
    deep = "/local/domain/5/w/" + "/".join(["d" * 20] * 5)
    h.write_ok(guest, deep, b"v")  # 18 + 105 + 4000 + 2 > 4096
    assert h.events(h.dom0) == []
    assert h.events(guest) == []
    dropped = [c.outbox.dropped_events for c in h.engine.connections.values()]
    assert sum(dropped) >= 2
    # A short child still fits and is delivered to both.
    h.write_ok(guest, "w/s", b"v")
    assert h.events(h.dom0) == [("/local/domain/5/w/s", TOKEN)]
    assert h.events(guest) == [("w/s", TOKEN)]
    # RM of the subtree and a transaction commit: only the fitting events.
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, deep + "/x", b"", tx=tx)
    h.write_ok(h.dom0, "/local/domain/5/w/t", b"", tx=tx)
    assert h.end(h.dom0, tx) == "OK"
    assert h.events(guest) == [("w/t", TOKEN)]
    h.events(h.dom0)
    h.ok(h.dom0, Op.RM, "/local/domain/5/w/" + "d" * 20)
    # The removed top fits; its deep descendants' events do not.
    assert h.events(guest) == [("w/" + "d" * 20, TOKEN)]
    for conn in (h.dom0, guest):
        for packet in h.log[conn]:
            assert len(packet.payload) <= PAYLOAD_MAX
    assert h.read(guest, "w/s") == b"v"
    assert h.consistent() == []


def test_maximum_size_watch_request(h: Harness) -> None:
    """A WATCH whose payload is exactly 4096 bytes: accepted; its initial
    event (the same two strings) fits exactly."""
    path = "/m"
    token = "t" * (PAYLOAD_MAX - len(path) - 2)
    h.ok(h.dom0, Op.WATCH, path, token)
    assert h.events(h.dom0) == [(path, token)]
    h.write_ok(h.dom0, "/m", b"v")
    assert h.events(h.dom0) == [(path, token)]
    h.write_ok(h.dom0, "/m/child", b"v")  # 6 bytes more: dropped
    assert h.events(h.dom0) == []
