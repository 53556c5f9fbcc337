"""The crash drill (issue 5): SIGKILL pyxenstored under load, restart it, check.

One run starts pyxenstored (``--durability write`` or ``fsync``) under the
stand-in hypervisor (``tests/fakexen``, docs/testing.md) with G simulated
guests on shared rings and C socket clients, then repeats N cycles of:

1. **load**: every client and guest runs a few workers that write keys
   (one at a time and in pipelined bursts), remove keys, and run
   transactions that set a shared group of keys (and its counter) to one
   value; the socket clients and the guests keep watches. Every
   state-changing request is written down client-side with its pending
   reply (``drills.ledger``): acknowledged, refused, or still in flight.
2. **kill**: after a seeded random delay, SIGKILL, in the middle of it all.
3. **restart** on the same socket and state directory; the guests keep
   their rings (the daemon must re-attach them) and the socket clients
   reconnect. Recovery time runs from the restart to the first reply.
4. **check**: each guest's ring answers again (what it left in its ring
   is served), every acknowledged write and RM is there (the key holds the
   last acknowledged value or a later in-flight one), every transaction
   group holds one commit's values whole and no acknowledged commit is
   lost; a transaction each guest held open across the crash answers
   EAGAIN and left nothing behind; each guest's restored watch fired again
   and fires for a write made after the restart (and a socket client's new
   watch works); ``CONTROL check`` answers OK; the daemon logged no
   traceback.

Lost acknowledged writes, half-applied transactions and missed watch
events make the verdict; any other surprise (a guest ring that stops
answering, an unexpected error, a traceback) counts as "other" and fails
the run too. A guest whose ring broke is replaced by a fresh domain so the
run goes on. Requests a guest sent that the killed daemon took from the
ring but never answered are counted (a real guest would wait for ever).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
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
from drills.ledger import ACKED, Finding, GroupLedger, KeyLedger, commit_value, outcome
from drills.progress import ProgressBar
from pyxenstored.client import (
    Client,
    ConnectionClosed,
    PendingReply,
    WatchEvent,
    WatchStream,
    XenstoreError,
    open_client,
)
from pyxenstored.client.payloads import error_name, strings_payload, write_payload
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet

#: Findings kept in full for the report (the counts are always complete).
MAX_REPORTED = 40
#: Keys a worker writes in one pipelined burst.
BURST = 3
#: ``--value-size`` is capped at these for guests and for socket clients.
GUEST_VALUE_MAX = 1500
SOCKET_VALUE_MAX = 3900


@dataclass
class DrillOptions:
    cycles: int = 200
    seed: int = 0
    guests: int = 2
    clients: int = 3
    #: Concurrent workers per socket client and per guest.
    workers: int = 2
    #: Keys of each worker.
    keys: int = 6
    #: Transaction groups the socket clients share (each guest has its own).
    groups: int = 2
    #: Pad written values to this many bytes (large values grow the journal
    #: faster, so that kills also land during its compaction).
    value_size: int = 0
    durability: str = "write"
    #: The kill comes this long (uniform, seeded) after the load starts.
    min_delay: float = 0.05
    max_delay: float = 0.5
    #: Seconds to wait for a reply or an event that must come after a restart.
    timeout: float = 10.0
    #: Scratch directory (default: a fresh one under /tmp, whose paths stay
    #: short enough for Unix sockets); kept if given, on failure, or with keep.
    workdir: Path | None = None
    keep: bool = False
    progress: bool = True


@dataclass
class Summary:
    options: DrillOptions
    cycles: int = 0
    kills: int = 0
    recoveries: int = 0
    requests_acknowledged: int = 0
    #: Of those, the guests' (over their rings).
    guest_requests_acknowledged: int = 0
    #: Changes and commits whose reply never came (their outcome is free).
    requests_in_flight: int = 0
    #: Guest requests the killed daemon took from the ring and never answered.
    guest_requests_unanswered: int = 0
    #: Guests whose ring stopped working after a restart (and were replaced).
    guest_rings_broken: int = 0
    recovery_times: list[float] = field(default_factory=list)
    lost_writes: int = 0
    half_applied: int = 0
    missed_watch_events: int = 0
    other_failures: int = 0
    findings: list[str] = field(default_factory=list)
    aborted: str | None = None
    seconds: float = 0.0
    workdir: str | None = None

    @property
    def failures(self) -> int:
        return self.lost_writes + self.half_applied + self.missed_watch_events + self.other_failures

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.aborted is None

    def recovery(self) -> dict[str, float | None]:
        times = self.recovery_times
        if not times:
            return {"min": None, "median": None, "max": None}
        return {"min": min(times), "median": statistics.median(times), "max": max(times)}

    def as_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "options": {
                "cycles": o.cycles,
                "seed": o.seed,
                "guests": o.guests,
                "clients": o.clients,
                "workers": o.workers,
                "keys": o.keys,
                "value_size": o.value_size,
                "durability": o.durability,
                "min_delay": o.min_delay,
                "max_delay": o.max_delay,
            },
            "cycles": self.cycles,
            "kills": self.kills,
            "recoveries": self.recoveries,
            "requests_acknowledged": self.requests_acknowledged,
            "guest_requests_acknowledged": self.guest_requests_acknowledged,
            "requests_in_flight_at_kill": self.requests_in_flight,
            "guest_requests_unanswered": self.guest_requests_unanswered,
            "guest_rings_broken": self.guest_rings_broken,
            "recovery_seconds": self.recovery(),
            "recovery_times": self.recovery_times,
            "lost_writes": self.lost_writes,
            "half_applied_transactions": self.half_applied,
            "missed_watch_events": self.missed_watch_events,
            "other_failures": self.other_failures,
            "findings": self.findings,
            "aborted": self.aborted,
            "seconds": self.seconds,
            "workdir": self.workdir,
            "ok": self.ok,
        }

    def table(self) -> str:
        o = self.options
        rec = self.recovery()

        def secs(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows = [
            ("cycles", f"{self.cycles} of {o.cycles}"),
            ("kills", str(self.kills)),
            ("recoveries", str(self.recoveries)),
            ("requests acknowledged", str(self.requests_acknowledged)),
            ("  of which by guests on rings", str(self.guest_requests_acknowledged)),
            ("requests in flight at a kill", str(self.requests_in_flight)),
            ("guest requests never answered", str(self.guest_requests_unanswered)),
            (
                "recovery time (s) min/median/max",
                f"{secs(rec['min'])} / {secs(rec['median'])} / {secs(rec['max'])}",
            ),
            ("lost acknowledged writes", str(self.lost_writes)),
            ("half-applied transactions", str(self.half_applied)),
            ("missed watch events", str(self.missed_watch_events)),
            ("other failures", str(self.other_failures)),
            ("  of which guest rings broken", str(self.guest_rings_broken)),
        ]
        return report.render(
            f"crash drill: seed {o.seed}, {o.guests} guests, {o.clients} socket clients, "
            f"{o.workers} workers each, durability {o.durability}, {self.seconds:.1f} s",
            rows,
            value_width=20,
            rule_extra=24,
            ok=self.ok,
            aborted=self.aborted,
            findings=self.findings,
            failures=self.failures,
            trailing=[f"logs and state: {self.workdir}"] if self.workdir else [],
        )


@dataclass(eq=False)
class Actor(BaseActor):
    """A connection that runs load, with the ledgers of what it changed."""

    #: Each worker's keys, by worker name.
    keys: dict[str, list[KeyLedger]] = field(default_factory=dict)
    groups: list[GroupLedger] = field(default_factory=list)
    #: Watch events received by the guest's long-lived watch.
    events: list[WatchEvent] = field(default_factory=list)
    #: ``len(events)`` when the daemon was killed.
    mark: int = 0
    #: TRANSACTION_START replies of the load, and the ids whose END was sent.
    tx_starts: list[PendingReply] = field(default_factory=list)
    tx_end_sent: set[int] = field(default_factory=set)
    tx_ended: set[int] = field(default_factory=set)
    #: Of ``tx_starts``, those answered before the kill (the others may have
    #: been served by the restarted daemon, from the ring: live transactions).
    tx_started_before_kill: set[int] = field(default_factory=set)
    #: A transaction held open across the crash, and the value written in it.
    stale: tuple[int, str] | None = None
    #: Requests on the ring that will never be answered (the client keeps them).
    unanswered: int = 0
    broken: str | None = None

    @property
    def token(self) -> str:
        return f"drill-{self.name}"


class Worker:
    """One task of load on an actor's connection, with its own keys."""

    def __init__(self, drill: CrashDrill, actor: Actor, name: str, seed: int) -> None:
        self.drill = drill
        self.actor = actor
        self.name = name
        self.keys = actor.keys[name]
        self.groups = actor.groups
        self.rng = random.Random(seed)
        # Within the guests' node size quota (2048 bytes with the path), and
        # a request's 4096-byte payload for dom0.
        size = min(drill.options.value_size, GUEST_VALUE_MAX if actor.home else SOCKET_VALUE_MAX)
        self.padding = "." * max(size - len(name) - 8, 0)

    def value(self) -> str:
        """A value never written before (the sequence outlives the worker)."""
        return f"{self.name}:{self.drill.next_seq(self.name)}{self.padding}"

    def send(self, op: Op, payload: bytes, tx_id: int = 0) -> PendingReply:
        try:
            return self.actor.the_client().send_request(op, payload, tx_id)
        except ConnectionClosed:
            raise Stop from None

    async def reply(self, pending: PendingReply) -> Packet:
        try:
            packet = await pending.wait_packet()
        except ConnectionClosed:
            raise Stop from None
        summary = self.drill.summary
        summary.requests_acknowledged += 1
        if self.actor.home is not None:
            summary.guest_requests_acknowledged += 1
        return packet

    def refused(self, what: str, packet: Packet) -> None:
        self.drill.other(f"{self.actor.name}: {what} refused with {error_name(packet.payload)}")

    async def run(self) -> None:
        try:
            while True:
                choice = self.rng.random()
                if choice < 0.45:
                    await self.write([self.rng.choice(self.keys)])
                elif choice < 0.6:
                    await self.write(self.rng.sample(self.keys, min(BURST, len(self.keys))))
                elif choice < 0.7:
                    await self.rm(self.rng.choice(self.keys))
                else:
                    await self.transaction(self.rng.choice(self.groups))
        except Stop:
            return

    async def write(self, keys: list[KeyLedger]) -> None:
        """WRITE each key a fresh value, pipelined."""
        sent = []
        for key in keys:
            value = self.value()
            pending = self.send(Op.WRITE, write_payload(self.actor.wire(key.path), value))
            key.record(value, pending)
            sent.append((key, pending))
        for key, pending in sent:
            packet = await self.reply(pending)
            if packet.type == Op.ERROR:
                self.refused(f"WRITE {key.path}", packet)

    async def rm(self, key: KeyLedger) -> None:
        pending = self.send(Op.RM, strings_payload(self.actor.wire(key.path)))
        key.record(None, pending)
        packet = await self.reply(pending)
        if packet.type == Op.ERROR and error_name(packet.payload) != "ENOENT":
            self.refused(f"RM {key.path}", packet)

    async def transaction(self, group: GroupLedger) -> None:
        """Counter + 1 and every member set to one value, retried on EAGAIN."""
        actor = self.actor
        for attempt in range(8):
            start = self.send(Op.TRANSACTION_START, b"\0")
            actor.tx_starts.append(start)
            packet = await self.reply(start)
            if packet.type == Op.ERROR:
                self.refused("TRANSACTION_START", packet)
                return
            tx_id = int(packet.payload.rstrip(b"\0"))
            read = await self.reply(
                self.send(Op.READ, strings_payload(actor.wire(group.counter_path)), tx_id)
            )
            if read.type == Op.ERROR and error_name(read.payload) != "ENOENT":
                self.refused(f"READ {group.counter_path} in a transaction", read)
                await self.end(tx_id, commit=False)
                return
            text = b"0" if read.type == Op.ERROR else read.payload
            if not text.isdigit():
                self.drill.other(f"{group.counter_path} read {text!r} in a transaction")
                await self.end(tx_id, commit=False)
                return
            counter = int(text) + 1
            value = commit_value(counter, self.name, self.drill.next_seq(self.name))
            value += self.padding
            writes = [
                self.send(
                    Op.WRITE, write_payload(actor.wire(group.counter_path), str(counter)), tx_id
                )
            ]
            writes += [
                self.send(Op.WRITE, write_payload(actor.wire(path), value), tx_id)
                for path in group.member_paths()
            ]
            failed = None
            for pending in writes:
                packet = await self.reply(pending)
                if packet.type == Op.ERROR and failed is None:
                    failed = packet
            if failed is not None:
                self.refused(f"WRITE in a transaction on {group.base}", failed)
                await self.end(tx_id, commit=False)
                return
            end = self.send(Op.TRANSACTION_END, b"T\0", tx_id)
            actor.tx_end_sent.add(tx_id)
            group.record(counter, value, end)
            packet = await self.reply(end)
            actor.tx_ended.add(tx_id)
            if packet.type != Op.ERROR:
                return
            if error_name(packet.payload) != "EAGAIN":
                self.refused(f"commit on {group.base}", packet)
                return
            await trio.sleep(self.rng.uniform(0, 0.002 * 2**attempt))

    async def end(self, tx_id: int, commit: bool) -> None:
        self.actor.tx_end_sent.add(tx_id)
        await self.reply(self.send(Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx_id))
        self.actor.tx_ended.add(tx_id)


class CrashDrill:
    def __init__(self, options: DrillOptions) -> None:
        self.options = options
        self.summary = Summary(options)
        self.rng = random.Random(options.seed)
        self.cycle = 0
        self.seqs: Counter[str] = Counter()
        shared = [GroupLedger(f"/drill/tx/g{k}") for k in range(options.groups)]
        self.sockets = []
        for i in range(options.clients):
            actor = Actor(f"c{i}", f"/drill/c{i}", groups=shared)
            self.add_keys(actor)
            self.sockets.append(actor)
        self.guests = [self.new_guest(domid) for domid in range(1, options.guests + 1)]
        self.next_domid = options.guests + 1
        #: Guests replaced after their ring broke (closed at the end).
        self.retired: list[Actor] = []
        self.workdir: Path | None = None
        self.daemon: DaemonProcess | None = None
        self.fx: Any = None  # fakexen_support.FakeXen
        self.ring_guest: Any = None  # the ring_guest module
        self.stack: AsyncExitStack | None = None
        self.background: trio.Nursery | None = None
        self.progress = ProgressBar(options.cycles, enabled=options.progress)

    def add_keys(self, actor: Actor) -> None:
        for w in range(self.options.workers):
            name = f"{actor.name}w{w}"
            actor.keys[name] = [
                KeyLedger(f"{actor.base}/w{w}/k{k}") for k in range(self.options.keys)
            ]

    def new_guest(self, domid: int) -> Actor:
        home = f"/local/domain/{domid}"
        actor = Actor(f"g{domid}", f"{home}/drill", home=home, domid=domid)
        actor.groups = [GroupLedger(f"{home}/drill/tx")]
        self.add_keys(actor)
        return actor

    def next_seq(self, writer: str) -> int:
        self.seqs[writer] += 1
        return self.seqs[writer]

    # -- findings ----------------------------------------------------------

    def report(self, kind: str, text: str) -> None:
        summary = self.summary
        if kind == "lost":
            summary.lost_writes += 1
        elif kind == "half-applied":
            summary.half_applied += 1
        elif kind == "missed":
            summary.missed_watch_events += 1
        else:
            summary.other_failures += 1
        if len(summary.findings) < MAX_REPORTED:
            summary.findings.append(f"cycle {self.cycle}: {kind}: {text}")

    def other(self, text: str) -> None:
        self.report("other", text)

    def finding(self, found: Finding) -> None:
        self.report("other" if found.kind == "unexpected" else found.kind, found.text)

    def the_daemon(self) -> DaemonProcess:
        if self.daemon is None:
            raise RuntimeError("no daemon")
        return self.daemon

    # -- the run -----------------------------------------------------------

    async def run(self) -> Summary:
        started = time.monotonic()
        support, self.ring_guest = fakexen.helpers()
        library = fakexen.build()  # fakexen.Unavailable: cannot run here
        try:
            async with AsyncExitStack() as stack:
                self.stack = stack
                self.background = await stack.enter_async_context(trio.open_nursery())
                try:
                    await guarded(self.setup(support, library))
                    for cycle in range(1, self.options.cycles + 1):
                        self.cycle = cycle
                        self.progress.update(cycle - 1, self.summary.failures, f"cycle {cycle}")
                        await guarded(self.one_cycle())
                        self.summary.cycles = cycle
                    self.progress.update(self.options.cycles, self.summary.failures)
                except DrillAborted as exc:
                    self.summary.aborted = str(exc)
                    self.other(f"drill aborted: {exc}")
                finally:
                    for actor in self.guests + self.retired:
                        if actor.client is not None:
                            await actor.client.aclose()
                    self.background.cancel_scope.cancel()
        finally:
            self.progress.close()
            self.teardown()
            self.summary.seconds = time.monotonic() - started
        return self.summary

    async def setup(self, support: Any, library: Path) -> None:
        options = self.options
        self.workdir = scratch.make_workdir(options.workdir, "drill-")
        self.fx = support.FakeXen(self.workdir / "fx")
        self.daemon = scratch.daemon_in(self.workdir, library, self.fx.root, options.durability)
        await scratch.start(self.daemon)
        async with open_client(self.daemon.socket_path) as dom0:
            await dom0.mkdir("/drill")
            for actor in self.guests:
                await actor.introduce(dom0, self.fx, self.ring_guest)
        for actor in self.guests:
            await self.attach(actor)

    async def attach(self, actor: Actor) -> None:
        """Connect the guest's client over its ring, watch ``drill``, and
        leave a transaction open. The client lives as long as the run, so
        this is only called where no other trio context is open."""
        assert self.stack is not None and self.background is not None
        client: Client = await self.stack.enter_async_context(actor.guest.client())
        actor.client = client
        events = await self.stack.enter_async_context(client.watch("drill", token=actor.token))
        with trio.fail_after(self.options.timeout):
            await events.receive()  # the immediate event
        self.background.start_soon(self.collect_events, actor, events)
        await self.open_stale_transaction(actor)

    async def replace(self, actor: Actor, dom0: Client) -> Actor:
        """A guest whose ring broke: release it, and introduce a new domain in
        its place (``attach`` it next)."""
        self.summary.guest_rings_broken += 1
        self.other(f"guest {actor.name}: {actor.broken}; replaced by domain {self.next_domid}")
        try:
            await dom0.release(actor.domid or 0)
        except XenstoreError as exc:
            self.other(f"RELEASE of domain {actor.domid} answered {exc}")
        if actor.client is not None:
            await actor.client.aclose()
        self.retired.append(actor)
        fresh = self.new_guest(self.next_domid)
        self.next_domid += 1
        self.guests[self.guests.index(actor)] = fresh
        await fresh.introduce(dom0, self.fx, self.ring_guest)
        return fresh

    def teardown(self) -> None:
        daemon = self.daemon
        if daemon is not None:
            problem = scratch.stop(daemon)
            if problem is not None and self.summary.aborted is None:
                self.other(problem)
            self.check_log()
        for actor in self.guests + self.retired:
            if actor.guest is not None:
                actor.guest.close()
        keep = self.options.keep or self.options.workdir is not None or not self.summary.ok
        self.summary.workdir = scratch.keep_or_remove(self.workdir, keep)

    async def collect_events(self, actor: Actor, events: WatchStream) -> None:
        try:
            async for event in events:
                actor.events.append(event)
        except ConnectionClosed:
            pass

    async def open_stale_transaction(self, actor: Actor) -> None:
        """Leave a transaction open (with a write in it) for the crash to find."""
        client = actor.the_client()
        value = f"stale:{self.cycle}"
        with trio.move_on_after(self.options.timeout):
            tx_id = await client.transaction_start()
            await client.send_request(Op.WRITE, write_payload("drill/stale", value), tx_id).wait()
            actor.stale = (tx_id, value)
            return
        raise DrillAborted(f"guest {actor.name}: no answer on its ring when idle")

    # -- one cycle -----------------------------------------------------------

    async def one_cycle(self) -> None:
        options = self.options
        daemon = self.the_daemon()
        delay = self.rng.uniform(options.min_delay, options.max_delay)
        async with AsyncExitStack() as stack:
            for actor in self.sockets:
                actor.tx_starts.clear()  # the server dropped them with the connection
                actor.client = await stack.enter_async_context(open_client(daemon.socket_path))
            async with trio.open_nursery() as load:
                for actor in self.sockets + self.guests:
                    for name in actor.keys:
                        worker = Worker(self, actor, name, self.rng.getrandbits(64))
                        load.start_soon(worker.run)
                for actor in self.sockets:
                    load.start_soon(self.socket_watch, actor)
                await trio.sleep(delay)
                daemon.kill()
                self.summary.kills += 1
                for actor in self.guests:
                    actor.mark = len(actor.events)
                    actor.tx_started_before_kill = {
                        id(start) for start in actor.tx_starts if start.done
                    }
                load.cancel_scope.cancel()
        for actor in self.sockets:
            actor.client = None
        self.progress.update(self.cycle - 1, self.summary.failures, f"cycle {self.cycle}: restart")
        refused = len(daemon.refusals)
        daemon.start()
        try:
            self.summary.recovery_times.append(await daemon.wait_ready())
        except DaemonDied as exc:
            raise DrillAborted(f"pyxenstored did not recover: {exc}") from exc
        for line in daemon.refusals[refused:]:
            self.other(
                "restart refused, the socket still held (by the killed daemon's forked "
                f"compaction child?), started again: {line}"
            )
        self.summary.recoveries += 1
        self.progress.update(self.cycle - 1, self.summary.failures, f"cycle {self.cycle}: check")
        await self.check(daemon)

    async def socket_watch(self, actor: Actor) -> None:
        """A socket client keeps a watch on its keys during the load."""
        client = actor.the_client()
        try:
            async with client.watch(actor.base, token=actor.token) as events:
                async for _ in events:
                    pass
        except ConnectionClosed:
            pass

    # -- checks --------------------------------------------------------------

    async def check(self, daemon: DaemonProcess) -> None:
        fresh = []
        async with open_client(daemon.socket_path) as checker:
            for actor in self.guests:
                await self.settle_guest(actor, checker)
            await self.check_restored_watches()
            await self.check_store(checker)
            await self.check_new_events(checker)
            reply = await checker.control("check")
            if reply != "OK":
                self.other(f"CONTROL check answered {reply!r}")
            self.check_log()
            for actor in list(self.guests):
                if actor.broken:
                    fresh.append(await self.replace(actor, checker))
        for actor in self.guests:
            if actor in fresh:
                await self.attach(actor)
            else:
                await self.open_stale_transaction(actor)

    async def within(
        self, what: str, actor: Actor, op: Op, payload: bytes, tx_id: int = 0
    ) -> Packet | None:
        """A guest's request after the restart, or None (and the guest is
        marked broken) if no answer comes."""
        result: Packet | None = None
        with trio.move_on_after(self.options.timeout):
            try:
                result = await actor.the_client().send_request(op, payload, tx_id).wait_packet()
            except ConnectionClosed as exc:
                actor.broken = f"ring connection lost after the restart ({what}): {exc}"
                return None
        if result is None:
            actor.broken = f"no answer on its ring within {self.options.timeout:g} s ({what})"
        return result

    async def settle_guest(self, actor: Actor, checker: Client) -> None:
        """Barrier, then end what the crash left open, then the stale transaction."""
        client = actor.the_client()
        # Requests are answered in order: once this READ is, everything the
        # guest left in its ring has been served, and anything still
        # unanswered was taken by the dead daemon and never will be.
        if await self.within("barrier", actor, Op.READ, b"drill/barrier\0") is None:
            return
        unanswered = client.connection.in_flight
        self.summary.guest_requests_unanswered += unanswered - actor.unanswered
        actor.unanswered = unanswered
        # Transactions the kill interrupted: end them, as a guest's retry would.
        for start in actor.tx_starts:
            if await outcome(start) != ACKED:
                continue
            tx_id = int((await start.wait()).rstrip(b"\0") or b"0")
            if tx_id in actor.tx_ended:
                continue
            packet = await self.within(
                "END of an interrupted transaction", actor, Op.TRANSACTION_END, b"F\0", tx_id
            )
            if packet is None:
                return
            answer = error_name(packet.payload) if packet.type == Op.ERROR else "OK"
            if tx_id in actor.tx_end_sent:
                expected = {"EAGAIN", "ENOENT"}  # its END may have been served
            elif id(start) in actor.tx_started_before_kill:
                expected = {"EAGAIN"}
            else:
                # The reply came after the kill: the old daemon's, still in
                # the ring, or the new one's, serving the request from the ring.
                expected = {"EAGAIN", "OK"}
            if answer not in expected:
                self.other(
                    f"{actor.name}: END of transaction {tx_id} (open at the crash) "
                    f"answered {answer}, expected {' or '.join(sorted(expected))}"
                )
        actor.tx_starts.clear()
        actor.tx_started_before_kill.clear()
        actor.tx_end_sent.clear()
        actor.tx_ended.clear()
        if actor.stale is None:
            return
        tx_id, value = actor.stale
        actor.stale = None
        for what, op, payload in (
            ("WRITE", Op.WRITE, write_payload("drill/stale", "again")),
            ("TRANSACTION_END", Op.TRANSACTION_END, b"T\0"),
        ):
            packet = await self.within(what, actor, op, payload, tx_id)
            if packet is None:
                return
            answer = error_name(packet.payload) if packet.type == Op.ERROR else "OK"
            if answer != "EAGAIN":
                self.other(
                    f"{actor.name}: {what} naming transaction {tx_id}, open at the crash, "
                    f"answered {answer}, expected EAGAIN"
                )
        found = await self.read(checker, f"{actor.home}/drill/stale")
        if found is not None:
            self.report(
                "half-applied",
                f"{actor.home}/drill/stale holds {found!r}: written by transaction "
                f"{tx_id} ({value!r}), which was open at the crash and never committed",
            )

    async def read(self, checker: Client, path: str) -> str | None:
        packet = await checker.send_request(Op.READ, strings_payload(path)).wait_packet()
        if packet.type == Op.ERROR:
            name = error_name(packet.payload)
            if name != "ENOENT":
                self.other(f"READ {path} answered {name}")
            return None
        return packet.payload.decode("utf-8", "replace")

    async def check_store(self, checker: Client) -> None:
        """Read every key and group back (pipelined) and judge them."""
        actors = [actor for actor in self.sockets + self.guests if not actor.broken]
        keys = [key for actor in actors for ledger in actor.keys.values() for key in ledger]
        groups = {id(g): g for actor in actors for g in actor.groups}.values()
        paths = [key.path for key in keys]
        for group in groups:
            paths += [group.counter_path, *group.member_paths()]
        pending = [checker.send_request(Op.READ, strings_payload(p)) for p in paths]
        values: dict[str, str | None] = {}
        for path, reply in zip(paths, pending, strict=True):
            packet = await reply.wait_packet()
            if packet.type == Op.ERROR:
                if error_name(packet.payload) != "ENOENT":
                    self.other(f"READ {path} answered {error_name(packet.payload)}")
                values[path] = None
            else:
                values[path] = packet.payload.decode("utf-8", "replace")
        for key in keys:
            found, in_flight = await key.check(values[key.path])
            self.summary.requests_in_flight += in_flight
            if found is not None:
                self.finding(found)
        for group in groups:
            counter = values[group.counter_path]
            members = [values[p] for p in group.member_paths()]
            findings, in_flight = await group.check(counter, members)
            self.summary.requests_in_flight += in_flight
            for found in findings:
                self.finding(found)

    async def wait_for(self, predicate: Callable[[], bool]) -> bool:
        with trio.move_on_after(self.options.timeout):
            while not predicate():
                await trio.sleep(0.005)
            return True
        return False

    async def check_restored_watches(self) -> None:
        """Each guest's watch, restored from the journal, fired once more."""
        for actor in self.guests:
            if actor.broken:
                continue

            def fired(actor: Actor = actor) -> bool:
                return any(
                    e.path == "drill" and e.token == actor.token for e in actor.events[actor.mark :]
                )

            if not await self.wait_for(fired):
                self.report(
                    "missed",
                    f"{actor.name}: its watch on drill did not fire after the restart "
                    f"(restored watches fire once)",
                )

    async def check_new_events(self, checker: Client) -> None:
        """A write after the restart reaches each guest's restored watch, and a
        socket client's new watch."""
        post = f"post-{self.cycle}"
        for actor in self.guests:
            if actor.broken:
                continue
            mark = len(actor.events)
            await checker.write(f"{actor.home}/drill/{post}", str(self.cycle))

            def arrived(actor: Actor = actor, mark: int = mark) -> bool:
                return any(
                    e.path == f"drill/{post}" and e.token == actor.token
                    for e in actor.events[mark:]
                )

            if not await self.wait_for(arrived):
                self.report(
                    "missed", f"{actor.name}: no event for drill/{post}, written after the restart"
                )
            await checker.rm(f"{actor.home}/drill/{post}")
        daemon = self.the_daemon()
        for actor in self.sockets:
            path = actor.base
            async with open_client(daemon.socket_path) as client:
                async with client.watch(path, token=actor.token) as events:
                    got: list[WatchEvent] = []
                    with trio.move_on_after(self.options.timeout):
                        got.append(await events.receive())
                    if not got:
                        self.report("missed", f"{actor.name}: no first event for a new watch")
                    await checker.write(f"{path}/{post}", str(self.cycle))
                    seen = False
                    with trio.move_on_after(self.options.timeout):
                        while not seen:
                            seen = (await events.receive()).path == f"{path}/{post}"
                    if not seen:
                        self.report("missed", f"{actor.name}: no event for {path}/{post}")
            await checker.rm(f"{path}/{post}")

    def check_log(self) -> None:
        daemon = self.daemon
        if daemon is None:
            return
        for problem in log_problems(daemon.take_log()):
            self.other(problem)


def run(options: DrillOptions) -> Summary:
    """Run the drill (in its own trio loop) and return the summary."""
    return trio.run(CrashDrill(options).run)


def write_json(summary: Summary, path: Path) -> None:
    path.write_text(json.dumps(summary.as_json(), indent=2) + "\n")


__all__ = ["CrashDrill", "DrillOptions", "Summary", "run", "write_json"]
