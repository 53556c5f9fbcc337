"""XSA-326 (CVE-2022-42311 … 42318): out-of-memory attacks on xenstored.

Attacks, one test each:
* replies never read: pipelined requests from a client that never reads;
* watch-event floods: a guest with many watches, then dom0 removes a big
  subtree (or writes a lot) while the guest never reads its events;
* maximum-size nodes held in many transactions at once;
* many nodes in one transaction;
* events left unread for ever (the watch-event timeout).

Expected (spec 5.7, 6.1): each vector is stopped by its limit, so the
server's memory stays bounded and other domains keep being served:
the reply bound stops reading a non-reading client (RSS grows a few MiB at
most); a receiver's queued events are capped (``max_output_bytes``), the rest
dropped, its queue never larger than the cap; transactions are limited to
``transactions`` - 1 per domain and ``transaction-nodes`` - 1 nodes each,
node size to ``node-size``; a transaction that hits its node limit fails
(commit ENOMEM, nothing applied); an unprivileged receiver's events left
unsent past the timeout (20 s) are dropped, its replies are not.

Layers: the pure engine for the event, transaction and timeout limits; a
live daemon for the non-reading client (RSS from /proc/<pid>/status).
"""

from __future__ import annotations

import time

from engine_harness import ERROR, Harness
from integration_support import HEADER, Daemon, RawConnection, vm_rss_kib
from live_flood import flood_without_reading, rss_growth_mib
from security_support import make_home

from pyxenstored.config import Config
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet

EVENT_CAP = 64 * 1024
#: The cap counts an event's payload, then queues it with its 16-byte header.
HEADER_SLACK = 16
WRITES = 6000


# -- replies never read (live daemon) ----------------------------------------------


def test_unread_replies_keep_memory_bounded(daemon: Daemon) -> None:
    big = b"z" * 4000
    with RawConnection(daemon.socket_path) as setup:
        setup.expect_ok(Op.WRITE, b"/xsa326/big\0" + big)
    time.sleep(0.2)
    before = vm_rss_kib(daemon.pid)
    request = b"/xsa326/big\0"
    stream = b"".join(HEADER.pack(Op.READ, i, 0, len(request)) + request for i in range(10_000))
    flooder = flood_without_reading(daemon.socket_path, stream)
    try:
        with RawConnection(daemon.socket_path, timeout=5) as other:
            for i in range(20):
                start = time.monotonic()
                other.expect_ok(Op.WRITE, b"/xsa326/other/%d\0x" % i)
                assert time.monotonic() - start < 1.0
        growth = rss_growth_mib(daemon.pid, before)
        assert growth < 16, f"RSS grew by {growth:.1f} MiB for unread replies"
        assert daemon.alive()
    finally:
        flooder.close()


def test_unread_watch_events_keep_memory_bounded(daemon: Daemon) -> None:
    """A socket client with watches that never reads; another floods writes."""
    watcher = RawConnection(daemon.socket_path)
    try:
        for i in range(50):
            watcher.expect_ok(Op.WATCH, b"/xsa326ev\0tok%d\0" % i)
        time.sleep(0.2)
        before = vm_rss_kib(daemon.pid)
        with RawConnection(daemon.socket_path, timeout=10) as writer:
            value = b"v" * 100
            for batch in range(WRITES // 500):  # 50 events of ~45 bytes per write
                for i in range(batch * 500, batch * 500 + 500):
                    writer.send(Op.WRITE, b"/xsa326ev/%d\0" % i + value)
                for _ in range(500):
                    assert writer.receive_reply()[0] == Op.WRITE
            start = time.monotonic()
            writer.expect_ok(Op.READ, b"/xsa326ev/0\0")
            assert time.monotonic() - start < 1.0
        growth = rss_growth_mib(daemon.pid, before)
        # Unbounded, the 300,000 queued events would take ~100 MiB of Python
        # objects; capped at 2 MiB of wire bytes they take ~15-20 MiB.
        assert growth < 40, f"RSS grew by {growth:.1f} MiB for unread events"
        assert daemon.alive()
    finally:
        watcher.close()


# -- event floods (engine) ------------------------------------------------------------


def test_watch_event_flood_is_capped() -> None:
    h = Harness(Config(max_output_bytes=EVENT_CAP))
    guest = make_home(h, 5)
    for i in range(100):
        h.write_ok(guest, f"tree/{i}/leaf", b"")
    for i in range(100):
        h.ok(guest, Op.WATCH, f"tree/{i}/leaf", f"exact{i}")
    h.ok(guest, Op.WATCH, "tree", "t" * 1000)
    engine = h.engine
    engine.take_output(guest)  # it read this far, and no further
    outbox = engine.connections[guest].outbox
    for round_ in range(30):
        for i in range(100):
            h.write_ok(h.dom0, f"/local/domain/5/tree/{i}/leaf", str(round_).encode())
        assert outbox.size <= EVENT_CAP + HEADER_SLACK
    h.ok(h.dom0, Op.RM, "/local/domain/5/tree")
    assert outbox.size <= EVENT_CAP + HEADER_SLACK
    assert outbox.dropped_events > 0
    # Another guest is still served, and still gets its events.
    other = make_home(h, 6, 8)
    h.watch(other, "x", "mine")
    h.write_ok(h.dom0, "/local/domain/6/x", b"1")
    assert h.events(other) == [("x", "mine")]
    # The flooded guest's replies are never dropped.
    engine.handle(guest, Packet(Op.READ, 4242, 0, b"/local/domain/5\0"))
    tail = engine.take_output(guest)
    assert tail.endswith(HEADER.pack(Op.READ, 4242, 0, 0))  # the empty home value
    assert outbox.replies == 0 and outbox.size == 0


# -- transactions (engine) ----------------------------------------------------------


def test_transactions_per_domain_limited(h: Harness) -> None:
    guest = make_home(h, 5)
    txs = [h.start(guest) for _ in range(9)]
    assert h.err(guest, Op.TRANSACTION_START, "") == "ENOSPC"
    value = b"x" * 1900
    for tx in txs:
        for i in range(5):
            h.write_ok(guest, f"big{i}", value, tx=tx)
        assert h.write(guest, "huge", b"x" * 2100, tx=tx)[1] == b"ENOSPC\0"
    assert h.err(guest, Op.READ, "big0") == "ENOENT"  # nothing committed yet
    for tx in txs:
        h.end(guest, tx, commit=False)
    h.start(guest)  # slots are free again
    assert h.consistent() == []


def test_many_nodes_in_one_transaction(h: Harness) -> None:
    guest = make_home(h, 5)
    h.set_quota(5, "transaction-nodes", 50)
    tx = h.start(guest)
    results = [h.write(guest, f"n{i}", b"v", tx=tx) for i in range(60)]
    refused = [i for i, (type_, _) in enumerate(results) if type_ == ERROR]
    assert refused and all(results[i][1] == b"ENOSPC\0" for i in refused)
    accessed = len(h.engine.connections[guest].transactions[tx].accessed)
    assert accessed < 50
    assert h.end(guest, tx) == "ENOMEM"
    assert h.directory(h.dom0, "/local/domain/5") == []
    # Other domains unaffected; the guest can start over.
    tx = h.start(guest)
    h.write_ok(guest, "ok", b"v", tx=tx)
    assert h.end(guest, tx) == "OK"
    assert h.consistent() == []


# -- unread events time out (engine) ------------------------------------------------


def test_unread_events_expire_for_guests_not_dom0(h: Harness) -> None:
    engine = h.engine
    guest = make_home(h, 5)
    h.ok(guest, Op.WATCH, "w", "g")
    h.ok(h.dom0, Op.WATCH, "/local/domain/5/w", "d")
    engine.take_output(guest)
    h.events(h.dom0)
    engine.set_time(100.0)
    for i in range(50):
        h.write_ok(h.dom0, f"/local/domain/5/w/{i}", b"v")
    engine.handle(guest, Packet(Op.READ, 77, 0, b"w\0"))  # a reply it will get
    assert engine.guest_output_waiting()
    engine.expire_events(110.0)  # not yet
    assert len(engine.connections[guest].outbox.messages) == 51
    engine.expire_events(100.0 + Config().watch_event_timeout + 1)
    assert engine.take_output(guest) == HEADER.pack(Op.READ, 77, 0, 0)  # the reply only
    assert engine.connections[guest].outbox.dropped_events == 50
    assert len(h.events(h.dom0)) == 50  # privileged receivers keep theirs
