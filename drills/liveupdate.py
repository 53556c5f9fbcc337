"""The live-update drill (issue 6): live-update pyxenstored under load, over and over, check.

One run starts pyxenstored (``--durability write``) under the stand-in
hypervisor (``tests/fakexen``, docs/testing.md) with M socket clients and
G simulated guests on shared rings, all under continuous load, and
live-updates it N times, each time through Xen's own tool::

    XENSTORED_PATH=<socket> xenstore-control live-update <binary>

where ``<binary>`` is a wrapper script that runs this checkout's
``python -m pyxenstored "$@"``. The daemon starts the wrapper beside
itself, which loads the store while the old instance serves, and the new
instance must then take every connection over (the process the drill
started stays as the anchor of its successors).

**The load.** Every client and guest (an *actor*) has its own subtree,
which only it writes: plain keys it writes (one at a time and in pipelined
bursts), reads, removes and lists, and a few transaction keys it changes
only in transactions. Because each subtree has a single writer and one
connection serves requests in order, the actor knows exactly what every
read must return and which watch events every acknowledged change must
cause. Each actor watches its own subtree, and each socket client also
watches the next actor's (a guest's, for the last ones), so every change
has two watchers. Transactions write two keys, read one back, and half of
them then wait until the next live update has completed (they stay open
across it), write again (one key a second time, one new) and commit; none
may fail (there is no other writer, so EAGAIN would be a bug too: it is
counted, and retried). A seeded random interval separates the updates.

**The checks.** No request may get an error reply it did not expect
(ENOENT for a key that is absent is expected) or a wrong value; no
connection may drop; every watch must receive exactly the events its
writer's acknowledged changes imply (one per WRITE and RM of an existing
key, and at commit one per key the transaction wrote, in first-write
order), in order, none lost, none twice; every transaction commits; at the
end every subtree, read back in full, equals the actors' own record; every
``xenstore-control`` exits 0; the daemon process the drill started is still
running, only it and the instances it handed over to logged, one
``took over`` per update and no traceback, and ``CONTROL check`` answers OK.

**The pause.** Every request is timestamped when sent and when its reply is
taken. For each update the *pause* is the longest interval, overlapping
the update (from the start of ``xenstore-control`` to its exit), in which
no reply arrived to anyone while requests were outstanding
(``drills.latency``); the *longest wait* is the longest latency of a
request outstanding during the update. The summary gives their median,
p99 and maximum over all updates, with the latency outside updates for
comparison; ``--plot`` draws the timeline (``drills.timeline``).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import statistics
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from drills import fakexen, report, scratch
from drills.aborting import DrillAborted, guarded
from drills.actor import Actor as BaseActor
from drills.actor import Stop
from drills.daemon import DaemonDied, DaemonProcess, log_problems
from drills.latency import EventCheck, Pauses, Timeline, check_events, percentile
from drills.progress import ProgressBar
from drills.timeline import Plot, UpdateMark
from drills.timeline import write as write_plot
from pyxenstored.client import (
    Client,
    ConnectionClosed,
    PendingReply,
    WatchStream,
    open_client,
)
from pyxenstored.client.payloads import error_name, split_strings, strings_payload, write_payload
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet, encode

XENSTORE_CONTROL = Path("/usr/lib/xen-4.17/bin/xenstore-control")
#: Findings kept in full for the report (the counts are always complete).
MAX_REPORTED = 40
#: The old instance's log line naming the new instance it hands over to.
NEW_INSTANCE = re.compile(r"new instance \(pid (\d+)\) ready")
#: Keys a pipelined burst writes.
BURST = 3
#: Events a watch may queue client-side: never drop one (the check counts them).
MAX_QUEUED = 10**7


@dataclass
class LiveUpdateOptions:
    cycles: int = 100
    clients: int = 20
    guests: int = 2
    #: Raw socket connections that send every request in pieces, with
    #: pauses between them, so that updates find half-received packets.
    dribblers: int = 1
    seed: int = 0
    #: Plain keys, and transaction keys, of each actor.
    keys: int = 8
    tx_keys: int = 4
    #: Mean seconds a worker waits between operations (exponential).
    think: float = 0.01
    #: Seconds between one update's end and the next one's start (uniform, seeded).
    min_interval: float = 0.5
    max_interval: float = 1.5
    durability: str = "write"
    #: Seconds for xenstore-control, a reply, or the events to settle.
    timeout: float = 60.0
    workdir: Path | None = None
    keep: bool = False
    progress: bool = True
    plot: Path | None = None
    #: Run the daemon with ``--trace-file <workdir>/run/trace``.
    trace: bool = False


@dataclass
class UpdateRecord:
    index: int
    start: float
    end: float
    returncode: int | None
    output: str = ""
    pause: float = 0.0
    longest_wait: float = 0.0

    @property
    def control(self) -> float:
        return self.end - self.start


def _stats(values: list[float]) -> dict[str, float | None]:
    return {
        "median": statistics.median(values) if values else None,
        "p99": percentile(values, 99),
        "max": max(values, default=None),
    }


@dataclass
class Summary:
    options: LiveUpdateOptions
    updates: list[UpdateRecord] = field(default_factory=list)
    updates_failed: int = 0
    requests_answered: int = 0
    guest_requests_answered: int = 0
    unexpected_errors: int = 0
    wrong_values: int = 0
    reads_checked: int = 0
    #: Requests sent in pieces while an update ran (a partial packet handed over).
    partial_across_update: int = 0
    connections_dropped: int = 0
    watches: int = 0
    events_expected: int = 0
    events_received: int = 0
    #: Not received because identical to an event still unsent (C's rule).
    events_collapsed: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    events_unexpected: int = 0
    events_out_of_order: int = 0
    transactions_started: int = 0
    transactions_committed: int = 0
    transactions_across_update: int = 0
    transactions_eagain: int = 0
    transactions_failed: int = 0
    nodes_checked: int = 0
    store_mismatches: int = 0
    other_failures: int = 0
    #: Latencies of the requests that overlapped no update.
    latency_outside: dict[str, float | None] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    aborted: str | None = None
    seconds: float = 0.0
    workdir: str | None = None
    plot: str | None = None

    @property
    def failures(self) -> int:
        return (
            self.updates_failed
            + self.unexpected_errors
            + self.wrong_values
            + self.connections_dropped
            + self.events_lost
            + self.events_duplicated
            + self.events_unexpected
            + self.events_out_of_order
            + self.transactions_eagain
            + self.transactions_failed
            + self.store_mismatches
            + self.other_failures
        )

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.aborted is None

    @property
    def pauses(self) -> list[float]:
        return [u.pause for u in self.updates if u.returncode == 0]

    def figures(self) -> dict[str, dict[str, float | None]]:
        done = [u for u in self.updates if u.returncode == 0]
        return {
            "pause_s": _stats([u.pause for u in done]),
            "longest_wait_s": _stats([u.longest_wait for u in done]),
            "xenstore_control_s": _stats([u.control for u in done]),
        }

    def as_json(self) -> dict[str, Any]:
        o = self.options
        counts = {
            name: getattr(self, name)
            for name in (
                "updates_failed requests_answered guest_requests_answered unexpected_errors "
                "wrong_values reads_checked partial_across_update connections_dropped watches "
                "events_expected events_received events_collapsed events_lost events_duplicated "
                "events_unexpected events_out_of_order transactions_started transactions_committed "
                "transactions_across_update transactions_eagain transactions_failed "
                "nodes_checked store_mismatches other_failures"
            ).split()
        }
        return {
            "options": {
                "cycles": o.cycles,
                "clients": o.clients,
                "guests": o.guests,
                "dribblers": o.dribblers,
                "seed": o.seed,
                "keys": o.keys,
                "tx_keys": o.tx_keys,
                "think": o.think,
                "min_interval": o.min_interval,
                "max_interval": o.max_interval,
                "durability": o.durability,
            },
            "updates_done": len([u for u in self.updates if u.returncode == 0]),
            **counts,
            **self.figures(),
            "latency_outside_updates_s": self.latency_outside,
            "updates": [
                {
                    "index": u.index,
                    "start_s": u.start,
                    "xenstore_control_s": u.control,
                    "returncode": u.returncode,
                    "pause_s": u.pause,
                    "longest_wait_s": u.longest_wait,
                }
                for u in self.updates
            ],
            "findings": self.findings,
            "aborted": self.aborted,
            "seconds": self.seconds,
            "workdir": self.workdir,
            "plot": self.plot,
            "ok": self.ok,
        }

    def table(self) -> str:
        o = self.options
        figures = self.figures()

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1e3:.1f}"

        def three(name: str) -> str:
            f = figures[name]
            return f"{ms(f['median'])} / {ms(f['p99'])} / {ms(f['max'])}"

        outside = self.latency_outside
        done = len([u for u in self.updates if u.returncode == 0])
        rows = [
            ("live updates done", f"{done} of {o.cycles}"),
            ("  xenstore-control failures", str(self.updates_failed)),
            ("requests answered", str(self.requests_answered)),
            ("  of which by guests on rings", str(self.guest_requests_answered)),
            ("reads checked", str(self.reads_checked)),
            ("requests sent in pieces across an update", str(self.partial_across_update)),
            ("unexpected error replies", str(self.unexpected_errors)),
            ("wrong values read", str(self.wrong_values)),
            ("connections dropped", str(self.connections_dropped)),
            ("watches", str(self.watches)),
            ("watch events expected", str(self.events_expected)),
            ("watch events received", str(self.events_received)),
            ("  collapsed (identical one unsent)", str(self.events_collapsed)),
            ("  lost", str(self.events_lost)),
            ("  duplicated", str(self.events_duplicated)),
            ("  unexpected", str(self.events_unexpected)),
            ("  out of order", str(self.events_out_of_order)),
            ("transactions started", str(self.transactions_started)),
            ("transactions committed", str(self.transactions_committed)),
            ("  open across a live update", str(self.transactions_across_update)),
            ("  EAGAIN (retried)", str(self.transactions_eagain)),
            ("  failed", str(self.transactions_failed)),
            ("nodes read back at the end", str(self.nodes_checked)),
            ("  differing from the clients' record", str(self.store_mismatches)),
            ("other failures", str(self.other_failures)),
            ("pause (ms) median/p99/max", three("pause_s")),
            ("longest wait (ms) median/p99/max", three("longest_wait_s")),
            ("xenstore-control (ms) median/p99/max", three("xenstore_control_s")),
            (
                "latency outside updates (ms) median/p99",
                f"{ms(outside.get('median'))} / {ms(outside.get('p99'))}",
            ),
        ]
        trailing = [f"timeline: {self.plot}"] if self.plot else []
        if self.workdir:
            trailing.append(f"logs and state: {self.workdir}")
        return report.render(
            f"live-update drill: seed {o.seed}, {o.clients} socket clients, {o.guests} guests, "
            f"{o.dribblers} dribblers, durability {o.durability}, {self.seconds:.1f} s",
            rows,
            value_width=24,
            rule_extra=26,
            ok=self.ok,
            aborted=self.aborted,
            findings=self.findings,
            failures=self.failures,
            up_to=True,
            trailing=trailing,
        )


@dataclass(eq=False)
class Actor(BaseActor):
    """A connection under load with its own subtree: a socket client or a guest."""

    #: Plain keys (absolute) -> the value they hold, None when absent.
    values: dict[str, str | None] = field(default_factory=dict)
    #: Transaction keys (absolute) -> their committed value.
    tx_values: dict[str, str] = field(default_factory=dict)
    #: Per state-changing request, in the order sent: its reply, the paths
    #: whose events it causes once acknowledged, and when it was sent.
    changes: list[tuple[PendingReply, tuple[str, ...], float]] = field(default_factory=list)
    dropped: bool = False
    seq: int = 0

    def absolute(self, path: str) -> str:
        """An event's path as the actor's record has it."""
        if self.home is not None and not path.startswith("/"):
            return f"{self.home}/{path}"
        return path

    def value(self, what: str) -> str:
        self.seq += 1
        return f"{self.name}:{what}:{self.seq}"

    async def expected_events(self) -> tuple[list[str], list[float]]:
        """The paths of the events its acknowledged changes caused, in order,
        and when each change was sent (every reply has come by now: waiting
        returns at once)."""
        paths: list[str] = []
        times: list[float] = []
        for reply, changed, sent in self.changes:
            if not reply.done:
                continue
            try:
                packet = await reply.wait_packet()
            except ConnectionClosed:
                continue
            if packet.type != Op.ERROR:
                paths.extend(changed)
                times.extend(sent for _ in changed)
        return paths, times


@dataclass(eq=False)
class Watch:
    watcher: Actor
    watched: Actor
    token: str
    received: list[str] = field(default_factory=list)
    #: When each event was taken from the connection (trio clock).
    received_at: list[float] = field(default_factory=list)


class LiveUpdateDrill:
    def __init__(self, options: LiveUpdateOptions) -> None:
        self.options = options
        self.summary = Summary(options)
        self.rng = random.Random(options.seed)
        self.sockets = [Actor(f"c{i}", f"/drill/c{i}") for i in range(options.clients)]
        self.guests = []
        for domid in range(1, options.guests + 1):
            home = f"/local/domain/{domid}"
            self.guests.append(Actor(f"g{domid}", f"{home}/drill", home=home, domid=domid))
        self.actors = self.sockets + self.guests
        for actor in self.actors:
            actor.values = {f"{actor.base}/k{k}": None for k in range(options.keys)}
            actor.tx_values = {
                f"{actor.base}/tx/t{k}": "initial" for k in range(max(options.tx_keys, 3))
            }
        #: Raw connections sending requests in pieces (no watches, no transactions).
        self.dribblers = [Actor(f"d{i}", f"/drill/d{i}") for i in range(options.dribblers)]
        for actor in self.dribblers:
            actor.values = {f"{actor.base}/k{k}": None for k in range(options.keys)}
        #: Updates started so far (``epoch`` counts those completed).
        self.started_updates = 0
        self.watches: list[Watch] = []
        self.timeline = Timeline.empty()
        self.guest_timeline = Timeline.empty()
        #: Live updates completed so far, and an event set at each one.
        self.epoch = 0
        self.epoch_event = trio.Event()
        self.stopping = False
        self.workdir: Path | None = None
        self.daemon: DaemonProcess | None = None
        self.binary: Path | None = None
        self.fx: Any = None
        self.ring_guest: Any = None
        self.load_started = 0.0
        self.progress = ProgressBar(options.cycles, label="update", enabled=options.progress)

    # -- findings ------------------------------------------------------------

    def report(self, counter: str, text: str) -> None:
        setattr(self.summary, counter, getattr(self.summary, counter) + 1)
        if len(self.summary.findings) < MAX_REPORTED:
            when = f"after update {self.epoch}"
            self.summary.findings.append(f"{when}: {text}")

    def other(self, text: str) -> None:
        self.report("other_failures", text)

    def the_daemon(self) -> DaemonProcess:
        if self.daemon is None:
            raise RuntimeError("no daemon")
        return self.daemon

    # -- requests ------------------------------------------------------------

    def send(
        self, actor: Actor, op: Op, payload: bytes, tx_id: int = 0
    ) -> tuple[PendingReply, float]:
        try:
            return actor.the_client().send_request(op, payload, tx_id), trio.current_time()
        except ConnectionClosed as exc:
            self.drop(actor, exc)
            raise Stop from None

    async def reply(self, actor: Actor, sent: tuple[PendingReply, float]) -> Packet:
        pending, at = sent
        try:
            packet = await pending.wait_packet()
        except ConnectionClosed as exc:
            self.drop(actor, exc)
            raise Stop from None
        now = trio.current_time()
        self.timeline.add(at, now)
        self.summary.requests_answered += 1
        if actor.home is not None:
            self.summary.guest_requests_answered += 1
            self.guest_timeline.add(at, now)
        return packet

    def drop(self, actor: Actor, exc: BaseException) -> None:
        if not actor.dropped:
            actor.dropped = True
            self.report("connections_dropped", f"{actor.name}: connection dropped: {exc}")

    def refused(self, actor: Actor, what: str, packet: Packet) -> None:
        self.report(
            "unexpected_errors", f"{actor.name}: {what} answered {error_name(packet.payload)}"
        )

    # -- the load ------------------------------------------------------------

    async def load(self, actor: Actor, seed: int) -> None:
        rng = random.Random(seed)
        keys = list(actor.values)
        try:
            while not self.stopping:
                choice = rng.random()
                if choice < 0.40:
                    await self.write(actor, [rng.choice(keys)])
                elif choice < 0.55:
                    await self.write(actor, rng.sample(keys, min(BURST, len(keys))))
                elif choice < 0.80:
                    await self.read(actor, rng.choice(keys))
                elif choice < 0.92:
                    await self.rm(actor, rng.choice(keys))
                else:
                    await self.directory(actor)
                await self.think(rng)
        except Stop:
            return

    async def think(self, rng: random.Random) -> None:
        think = self.options.think
        await trio.sleep(rng.expovariate(1 / think) if think > 0 else 0)

    async def write(self, actor: Actor, paths: list[str]) -> None:
        sent = []
        for path in paths:
            value = actor.value("w")
            request = self.send(actor, Op.WRITE, write_payload(actor.wire(path), value))
            actor.values[path] = value
            actor.changes.append((request[0], (path,), request[1]))
            sent.append((path, request))
        for path, request in sent:
            packet = await self.reply(actor, request)
            if packet.type == Op.ERROR:
                self.refused(actor, f"WRITE {path}", packet)

    async def read(self, actor: Actor, path: str) -> None:
        want = actor.values[path]
        packet = await self.reply(
            actor, self.send(actor, Op.READ, strings_payload(actor.wire(path)))
        )
        self.summary.reads_checked += 1
        if packet.type == Op.ERROR:
            if not (want is None and error_name(packet.payload) == "ENOENT"):
                self.refused(actor, f"READ {path}", packet)
            return
        got = packet.payload.decode("utf-8", "replace")
        if got != want:
            self.report(
                "wrong_values", f"{actor.name}: READ {path} gave {got!r}, expected {want!r}"
            )

    async def rm(self, actor: Actor, path: str) -> None:
        existed = actor.values[path] is not None
        request = self.send(actor, Op.RM, strings_payload(actor.wire(path)))
        actor.values[path] = None
        if existed:
            actor.changes.append((request[0], (path,), request[1]))
        packet = await self.reply(actor, request)
        # RM of a missing node whose parent exists: OK in C, ENOENT is fine too.
        if packet.type == Op.ERROR and (existed or error_name(packet.payload) != "ENOENT"):
            self.refused(actor, f"RM {path}", packet)

    async def directory(self, actor: Actor) -> None:
        want = sorted(
            ["tx"] + [p.rsplit("/", 1)[1] for p, v in actor.values.items() if v is not None]
        )
        packet = await self.reply(
            actor, self.send(actor, Op.DIRECTORY, strings_payload(actor.wire(actor.base)))
        )
        self.summary.reads_checked += 1
        if packet.type == Op.ERROR:
            self.refused(actor, f"DIRECTORY {actor.base}", packet)
            return
        got = sorted(split_strings(packet.payload))
        if got != want:
            self.report(
                "wrong_values",
                f"{actor.name}: DIRECTORY {actor.base} gave {got}, expected {want}",
            )

    async def transactions(self, actor: Actor, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not self.stopping:
                await self.transaction(actor, rng, across=rng.random() < 0.5)
                await self.think(rng)
        except Stop:
            return

    async def transaction(self, actor: Actor, rng: random.Random, across: bool) -> None:
        """Write two keys, maybe wait for the next update, write two more (one
        again), read back, commit; retried on EAGAIN (counted: unexpected)."""
        for _attempt in range(10):
            packet = await self.reply(actor, self.send(actor, Op.TRANSACTION_START, b"\0"))
            if packet.type == Op.ERROR:
                self.refused(actor, "TRANSACTION_START", packet)
                return
            tx_id = int(packet.payload.rstrip(b"\0"))
            self.summary.transactions_started += 1
            epoch = self.epoch
            a, b, c = rng.sample(list(actor.tx_values), 3)
            written: dict[str, str] = {}
            if not await self.tx_writes(actor, tx_id, [a, b], written):
                return
            if across:
                await self.next_update(epoch)
            if not await self.tx_writes(actor, tx_id, [b, c], written):
                return
            read = await self.reply(
                actor, self.send(actor, Op.READ, strings_payload(actor.wire(a)), tx_id)
            )
            self.summary.reads_checked += 1
            if read.type == Op.ERROR:
                self.refused(actor, f"READ {a} in transaction {tx_id}", read)
            elif read.payload.decode("utf-8", "replace") != written[a]:
                self.report(
                    "wrong_values",
                    f"{actor.name}: READ {a} in transaction {tx_id} gave {read.payload!r}, "
                    f"expected {written[a]!r}",
                )
            spanned = self.epoch > epoch
            end = self.send(actor, Op.TRANSACTION_END, b"T\0", tx_id)
            actor.changes.append((end[0], tuple(written), end[1]))  # first-write order
            packet = await self.reply(actor, end)
            if packet.type != Op.ERROR:
                self.summary.transactions_committed += 1
                if spanned:
                    self.summary.transactions_across_update += 1
                actor.tx_values.update(written)
                return
            if error_name(packet.payload) == "EAGAIN":
                self.report(
                    "transactions_eagain",
                    f"{actor.name}: transaction {tx_id} answered EAGAIN at commit, with no "
                    "other writer of its keys" + (" (open across an update)" if spanned else ""),
                )
                continue
            self.report(
                "transactions_failed",
                f"{actor.name}: commit of transaction {tx_id} answered "
                f"{error_name(packet.payload)}" + (" (open across an update)" if spanned else ""),
            )
            return
        self.report("transactions_failed", f"{actor.name}: 10 commits in a row answered EAGAIN")

    async def tx_writes(
        self, actor: Actor, tx_id: int, paths: list[str], written: dict[str, str]
    ) -> bool:
        sent = []
        for path in paths:
            value = actor.value("t")
            sent.append(
                (path, self.send(actor, Op.WRITE, write_payload(actor.wire(path), value), tx_id))
            )
            written[path] = value
        ok = True
        for path, request in sent:
            packet = await self.reply(actor, request)
            if packet.type == Op.ERROR:
                self.refused(actor, f"WRITE {path} in transaction {tx_id}", packet)
                ok = False
        if not ok:
            await self.reply(actor, self.send(actor, Op.TRANSACTION_END, b"F\0", tx_id))
            self.summary.transactions_failed += 1
        return ok

    async def next_update(self, epoch: int) -> None:
        """Until a live update completes after ``epoch`` (or the load stops)."""
        while self.epoch == epoch and not self.stopping:
            await self.epoch_event.wait()

    def advance_epoch(self) -> None:
        self.epoch += 1
        event, self.epoch_event = self.epoch_event, trio.Event()
        event.set()

    async def dribble(self, actor: Actor, seed: int) -> None:
        """Write and read keys over a raw socket, every request in two to four
        pieces with pauses between them; check every reply."""
        rng = random.Random(seed)
        keys = list(actor.values)
        daemon = self.the_daemon()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(str(daemon.socket_path))
        except OSError as exc:
            sock.close()
            self.drop(actor, exc)
            return
        stream = trio.SocketStream(sock)
        decoder = Decoder()
        received: list[Packet] = []
        req_id = 0
        try:
            while not self.stopping:
                req_id += 1
                path = rng.choice(keys)
                if rng.random() < 0.5:
                    value: str | None = actor.value("d")
                    op, payload = Op.WRITE, write_payload(path, value or "")
                else:
                    value = actor.values[path]
                    op, payload = Op.READ, strings_payload(path)
                data = encode(op, req_id, 0, payload)
                pieces = min(rng.randint(1, 3), len(data) - 1)
                cuts = sorted(rng.sample(range(1, len(data)), pieces))
                first = self.started_updates
                for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
                    if a:
                        await trio.sleep(rng.uniform(0.001, 0.03))
                    await stream.send_all(data[a:b])
                sent = trio.current_time()
                if self.started_updates != first:
                    self.summary.partial_across_update += 1
                if op == Op.WRITE:
                    actor.values[path] = value
                while not received:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise ConnectionClosed("connection closed by the server")
                    received += decoder.feed(chunk)
                packet = received.pop(0)
                self.timeline.add(sent, trio.current_time())
                self.summary.requests_answered += 1
                if packet.req_id != req_id or packet.type not in (op, Op.ERROR):
                    self.other(
                        f"{actor.name}: request {req_id} ({op.name}) answered by "
                        f"{packet.type} #{packet.req_id}"
                    )
                elif packet.type == Op.ERROR:
                    absent = op == Op.READ and value is None
                    if not (absent and error_name(packet.payload) == "ENOENT"):
                        self.refused(actor, f"{op.name} {path} (sent in pieces)", packet)
                elif op == Op.READ:
                    self.summary.reads_checked += 1
                    got = packet.payload.decode("utf-8", "replace")
                    if got != value:
                        self.report(
                            "wrong_values",
                            f"{actor.name}: READ {path} gave {got!r}, expected {value!r}",
                        )
                await self.think(rng)
        except (OSError, trio.BrokenResourceError, ConnectionClosed, ProtocolError) as exc:
            self.drop(actor, exc)
        finally:
            await trio.aclose_forcefully(stream)

    # -- the updates ---------------------------------------------------------

    async def updates(self) -> None:
        options = self.options
        daemon = self.the_daemon()
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env["XENSTORED_PATH"] = str(daemon.socket_path)
        for index in range(1, options.cycles + 1):
            await trio.sleep(self.rng.uniform(options.min_interval, options.max_interval))
            self.progress.update(index - 1, self.summary.failures, f"update {index}")
            self.started_updates += 1
            start = trio.current_time()
            result = None
            with trio.move_on_after(options.timeout):
                result = await trio.run_process(
                    [str(XENSTORE_CONTROL), "live-update", str(self.binary)],
                    env=env,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            end = trio.current_time()
            record = UpdateRecord(index, start, end, None if result is None else result.returncode)
            self.summary.updates.append(record)
            if result is None:
                self.report(
                    "updates_failed", f"update {index}: xenstore-control still running after "
                    f"{options.timeout:g} s"
                )
            else:
                record.output = (result.stdout + result.stderr).decode(errors="replace").strip()
                if result.returncode != 0:
                    self.report(
                        "updates_failed",
                        f"update {index}: xenstore-control exited {result.returncode}: "
                        f"{record.output}",
                    )
            try:
                daemon.check_alive()
            except DaemonDied as exc:
                raise DrillAborted(f"pyxenstored died in update {index}: {exc}") from exc
            self.advance_epoch()
            self.progress.update(
                index, self.summary.failures, f"xenstore-control {record.control * 1e3:.0f} ms"
            )

    # -- the run -------------------------------------------------------------

    async def run(self) -> Summary:
        started = time.monotonic()
        support, self.ring_guest = fakexen.helpers()
        library = fakexen.build()  # fakexen.Unavailable: cannot run here
        if not XENSTORE_CONTROL.exists():
            raise fakexen.Unavailable(f"{XENSTORE_CONTROL} is not installed (xen-utils-4.17)")
        try:
            async with AsyncExitStack() as stack:
                background = await stack.enter_async_context(trio.open_nursery())
                try:
                    await guarded(self.setup(support, library, stack, background))
                    await guarded(self.drive())
                    await guarded(self.check())
                except DrillAborted as exc:
                    self.summary.aborted = str(exc)
                    self.other(f"drill aborted: {exc}")
                finally:
                    background.cancel_scope.cancel()
                    for actor in self.actors:
                        if actor.client is not None:
                            await actor.client.aclose()
        finally:
            self.progress.close()
            self.teardown()
            self.summary.seconds = time.monotonic() - started
        self.analyse()
        return self.summary

    async def setup(
        self, support: Any, library: Path, stack: AsyncExitStack, background: trio.Nursery
    ) -> None:
        options = self.options
        self.workdir = scratch.make_workdir(options.workdir, "lu-drill-")
        self.fx = support.FakeXen(self.workdir / "fx")
        self.binary = self.workdir / "pyxenstored-new"
        self.binary.write_text(
            f'#!/bin/sh\ncd {fakexen.REPO}\nexec {sys.executable} -m pyxenstored "$@"\n'
        )
        self.binary.chmod(0o755)
        self.daemon = scratch.daemon_in(self.workdir, library, self.fx.root, options.durability)
        if options.trace:
            self.daemon.argv += ["--trace-file", str(self.daemon.run_dir / "trace")]
        await scratch.start(self.daemon)
        socket_path = self.daemon.socket_path
        with trio.fail_after(options.timeout):
            async with open_client(socket_path) as dom0:
                await dom0.mkdir("/drill")
                for actor in self.dribblers:
                    await dom0.mkdir(actor.base)
                for actor in self.guests:
                    await actor.introduce(dom0, self.fx, self.ring_guest)
        # The connections live as long as the run, in ``stack``: no cancel
        # scope may be open around entering them.
        for actor in self.actors:
            if actor.guest is not None:
                actor.client = await stack.enter_async_context(actor.guest.client())
            else:
                actor.client = await stack.enter_async_context(open_client(socket_path))
            with trio.fail_after(options.timeout):
                client = actor.the_client()
                await client.mkdir(actor.wire(actor.base))
                for path, value in actor.tx_values.items():
                    await client.write(actor.wire(path), value)
        # Every actor watches its own subtree; each socket client the next actor's too.
        for actor in self.actors:
            await self.add_watch(actor, actor, stack, background)
        for i, actor in enumerate(self.sockets):
            watched = self.actors[(i + 1) % len(self.actors)]
            if watched is not actor:
                await self.add_watch(actor, watched, stack, background)
        self.summary.watches = len(self.watches)

    async def add_watch(
        self, watcher: Actor, watched: Actor, stack: AsyncExitStack, background: trio.Nursery
    ) -> None:
        path = watcher.wire(watched.base)
        token = f"{watcher.name}-on-{watched.name}"
        events: WatchStream = await stack.enter_async_context(
            watcher.the_client().watch(path, token=token, max_queued=MAX_QUEUED)
        )
        with trio.fail_after(self.options.timeout):
            first = await events.receive()
        if first.path != path:
            self.other(f"{token}: the first event is for {first.path}, not {path}")
        watch = Watch(watcher, watched, token)
        self.watches.append(watch)
        background.start_soon(self.collect, watch, events)

    async def collect(self, watch: Watch, events: WatchStream) -> None:
        try:
            async for event in events:
                watch.received.append(watch.watcher.absolute(event.path))
                watch.received_at.append(trio.current_time())
        except ConnectionClosed as exc:
            self.drop(watch.watcher, exc)

    async def drive(self) -> None:
        """The load, and the updates; then the load winds down."""
        self.load_started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for actor in self.actors:
                nursery.start_soon(self.load, actor, self.rng.getrandbits(64))
                nursery.start_soon(self.transactions, actor, self.rng.getrandbits(64))
            for actor in self.dribblers:
                nursery.start_soon(self.dribble, actor, self.rng.getrandbits(64))
            try:
                await self.updates()
            finally:
                self.stopping = True
                self.epoch_event.set()
            with trio.move_on_after(self.options.timeout) as waited:
                while len(nursery.child_tasks) > 0:
                    await trio.sleep(0.01)
            if waited.cancelled_caught:
                self.other(f"the load did not wind down within {self.options.timeout:g} s")
                nursery.cancel_scope.cancel()
        self.progress.update(self.options.cycles, self.summary.failures, "checking")

    # -- checks --------------------------------------------------------------

    async def check(self) -> None:
        await self.check_events()
        daemon = self.the_daemon()
        async with open_client(daemon.socket_path) as checker:
            with trio.fail_after(self.options.timeout):
                for actor in self.actors + self.dribblers:
                    await self.check_subtree(checker, actor)
                reply = await checker.control("check")
            if reply != "OK":
                self.other(f"CONTROL check answered {reply!r}")
        for actor in self.actors:
            if actor.client is not None and actor.client.closed:
                self.drop(actor, ConnectionClosed("closed at the end of the run"))
        self.check_log()

    async def check_events(self) -> None:
        """Wait until every watch has had what it should (or no more comes),
        then compare each watch's events with its writer's record."""
        expected = {id(actor): await actor.expected_events() for actor in self.actors}

        def settled() -> bool:
            return all(
                len(w.received) >= len(expected[id(w.watched)][0]) for w in self.watches
            )

        # Collapsed events (see below) never come, so this may time out.
        with trio.move_on_after(min(self.options.timeout, 5.0)):
            while not settled():
                await trio.sleep(0.02)
        await trio.sleep(0.3)  # a duplicate would come now
        summary = self.summary
        for watch in self.watches:
            paths, sent = expected[id(watch.watched)]

            def may_collapse(j: int, k: int, sent: list[float] = sent, w: Watch = watch) -> bool:
                # The daemon collapses an event identical to one still unsent
                # (C since XSA-326): possible only if the earlier event k
                # reached the watcher after change j was sent.
                return w.received_at[k] >= sent[j]

            result: EventCheck = check_events(paths, watch.received, may_collapse)
            summary.events_expected += result.expected
            summary.events_received += result.received
            summary.events_collapsed += result.collapsed
            for counter, count in (
                ("events_lost", result.lost),
                ("events_duplicated", result.duplicated),
                ("events_unexpected", result.unexpected),
                ("events_out_of_order", result.out_of_order),
            ):
                if count:
                    setattr(summary, counter, getattr(summary, counter) + count - 1)
                    self.report(
                        counter,
                        f"watch {watch.token}: {count} {counter.split('_', 1)[1].replace('_', ' ')}"
                        f" ({result.first_difference}{self.when(watch, result)})",
                    )
            if not result.ok:
                self.dump_events(watch, paths)

    def when(self, watch: Watch, result: EventCheck) -> str:
        """Where the first difference falls relative to the updates."""
        index = result.first_index
        if index is None or not watch.received_at:
            return ""
        at = watch.received_at[min(index, len(watch.received_at) - 1)]
        before = [u for u in self.summary.updates if u.start <= at]
        if not before:
            return f"; received {at - self.load_started:.3f} s into the load, before any update"
        last = before[-1]
        return (
            f"; received {at - self.load_started:.3f} s into the load, "
            f"{at - last.start:+.3f} s after update {last.index} started "
            f"(xenstore-control ran {last.control:.3f} s)"
        )

    def dump_events(self, watch: Watch, expected: list[str]) -> None:
        """The whole sequences, for a post-mortem (kept with the workdir)."""
        if self.workdir is None:
            return
        t0 = self.load_started
        lines = ["# expected"] + expected + ["", "# received (seconds into the load, path)"]
        lines += [
            f"{at - t0:.6f} {path}"
            for at, path in zip(watch.received_at, watch.received, strict=False)
        ]
        lines += ["", "# updates (index, start, end: seconds into the load)"]
        lines += [f"{u.index} {u.start - t0:.6f} {u.end - t0:.6f}" for u in self.summary.updates]
        (self.workdir / f"events-{watch.token}.txt").write_text("\n".join(lines) + "\n")

    async def check_subtree(self, checker: Client, actor: Actor) -> None:
        """Read the actor's whole subtree back and compare with its record."""
        want: dict[str, str] = {actor.base: ""}
        if actor.tx_values:
            want[f"{actor.base}/tx"] = ""
        want.update(actor.tx_values)
        want.update((path, value) for path, value in actor.values.items() if value is not None)
        got: dict[str, str] = {}
        pending = [actor.base]
        while pending:
            path = pending.pop()
            got[path] = (await checker.read(path)).decode("utf-8", "replace")
            pending += [f"{path}/{name}" for name in await checker.directory(path)]
        self.summary.nodes_checked += len(got)
        for path in sorted(set(want) | set(got)):
            if want.get(path) != got.get(path):
                self.report(
                    "store_mismatches",
                    f"{path}: holds {got.get(path, '(absent)')!r}, the record says "
                    f"{want.get(path, '(absent)')!r}",
                )

    def check_log(self) -> None:
        daemon = self.the_daemon()
        text = daemon.take_log()
        for problem in log_problems(text):
            self.other(problem)
        done = len([u for u in self.summary.updates if u.returncode == 0])
        took_over = text.count("live update: took over")
        if took_over != done:
            self.other(f"the daemon logged {took_over} take-overs for {done} updates")
        # The processes allowed to log: the one started, and each new
        # instance it (or a successor) started and handed over to.
        allowed = {f"pyxenstored[{daemon.pid}"}
        successors = NEW_INSTANCE.findall(daemon.incarnation_log())
        allowed.update(f"pyxenstored[{pid}" for pid in successors)
        foreign = {
            line.split("]", 1)[0]
            for line in text.splitlines()
            if "pyxenstored[" in line and line.split("]", 1)[0].split(" ")[-1] not in allowed
        }
        if foreign:
            self.other(f"log lines from other processes than {sorted(allowed)}: "
                       f"{sorted(foreign)[:3]}")

    # -- the end -------------------------------------------------------------

    def teardown(self) -> None:
        daemon = self.daemon
        if daemon is not None:
            problem = scratch.stop(daemon)
            if problem is not None and self.summary.aborted is None:
                self.other(problem)
        for actor in self.guests:
            if actor.guest is not None:
                actor.guest.close()
        keep = self.options.keep or self.options.workdir is not None or not self.summary.ok
        self.summary.workdir = scratch.keep_or_remove(self.workdir, keep)

    def analyse(self) -> None:
        """Pauses per update, latency outside them, the plot."""
        pauses = Pauses(self.timeline)
        for update in self.summary.updates:
            update.pause = pauses.pause(update.start, update.end)
            update.longest_wait = pauses.longest_wait(update.start, update.end)
        outside = pauses.outside([(u.start, u.end) for u in self.summary.updates])
        self.summary.latency_outside = {
            "median": statistics.median(outside) if outside else None,
            "p99": percentile(outside, 99),
        }
        if self.options.plot is not None:
            self.summary.plot = str(self.write_plot(self.options.plot))

    def write_plot(self, path: Path) -> Path:
        t0 = self.load_started
        o = self.options
        plot = Plot(
            title=(
                f"pyxenstored live-update drill: {len(self.summary.updates)} updates, "
                f"{o.clients} socket clients, {o.guests} guests, seed {o.seed}"
            ),
            points=[
                (sent - t0, answered - sent)
                for sent, answered in zip(self.timeline.sent, self.timeline.answered, strict=True)
            ],
            updates=[
                UpdateMark(u.index, u.start - t0, u.end - t0, u.pause, u.control)
                for u in self.summary.updates
            ],
            summary=self.summary.table(),
        )
        return write_plot(plot, path)


def run(options: LiveUpdateOptions) -> Summary:
    """Run the drill (in its own trio loop) and return the summary."""
    return trio.run(LiveUpdateDrill(options).run)


def write_json(summary: Summary, path: Path) -> None:
    path.write_text(json.dumps(summary.as_json(), indent=2) + "\n")


__all__ = ["LiveUpdateDrill", "LiveUpdateOptions", "Summary", "run", "write_json"]
