"""``python -m bench persist``: the persistence benchmarks (issue 5).

Two measurements of pyxenstored's journal (``pyxenstored/persist/``):

**Recovery time** of a store of ``--nodes`` nodes (default 120,000, target
under 1 s). A daemon in ``write`` mode is populated with a realistic tree
(``store_leaves``: a few hundred domains' ``/local/domain/<d>/...`` with
vif and vbd front- and backends, values of 10-50 bytes, written pipelined),
then killed with SIGKILL, and restarted on its state directory. Each case
is started ``--repeats`` times, each time on a fresh copy of its state
directory (a start rewrites it), and reports the median of:

- *exec -> READ*: from just before ``exec`` to the first READ answered on
  the socket (the daemon only listens once recovery is done);
- *exec -> log*: from ``exec`` to the timestamp of the daemon's
  ``restored N nodes ...`` line (millisecond resolution);
- *log window*: from the daemon's first log line (written before recovery
  starts) to that line, i.e. the restore as the daemon itself sees it;
- *in-process*: ``DurableState.recover`` timed in a bare interpreter
  (``recover_child``) on another copy, so without start-up and imports;
  again with the cyclic garbage collector disabled; and split into its
  phases (CBOR decode, building nodes, journal replay).

The cases are

- ``fresh snapshot``: a directory as left by a daemon restarted once and
  killed after the background snapshot of what it replayed was written, so
  the restore reads one snapshot and replays no journal record;
- ``journal only``: an empty snapshot followed by every write in the
  journal. A live daemon never leaves this behind for a large store (it
  compacts once the journal exceeds max(4 MiB, 2 x snapshot) and there is
  no override), so the directory is written by this process driving an
  in-process ``Engine`` and ``DurableState.record``, never compacting,
  with one record per ``--depth`` writes (the daemon writes one record per
  batch it reads, often smaller, so it would have more records);
- ``as killed``: whatever the populated daemon left when it was killed
  (the last compaction's snapshot plus the journal tail); its listing is
  printed.

**Pipelined write throughput** in ``none``, ``write`` and ``fsync`` modes
(target: write >= 0.8 x none): one daemon per mode, all running at once,
measured in ``--rounds`` interleaved rounds (none, write, fsync, none, ...)
of the same pipelined-write workload as ``python -m bench`` (depth 64,
``--keys`` nodes, ``--value-size`` bytes), so that drift of the machine
hits every mode alike. Reports each mode's median ops/s and the ratios.

Example::

    .venv/bin/python -m bench persist
    .venv/bin/python -m bench persist --nodes 20000 --rounds 3 --seconds 1 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2

from bench.workloads import (
    ERROR,
    READ,
    WRITE,
    BenchError,
    Result,
    Wire,
    _request,
    parse,
    pipelined,
    setup_keys,
)
from drills.daemon import pyxenstored_argv, terminate
from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.persist import files, image
from pyxenstored.persist.durable import DurableState
from pyxenstored.persist.files import Durability
from pyxenstored.protocol.wire import Packet

#: Seconds a daemon has to recover and answer.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
#: Issue 5's acceptance targets.
RECOVERY_TARGET_S = 1.0
THROUGHPUT_TARGET = 0.8
MODES = ("none", "write", "fsync")
_LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"
#: The project's root, where ``bench`` is importable from.
ROOT = str(Path(__file__).resolve().parent.parent)


# ----------------------------------------------------------- the store


def _prefixes(path: str) -> Iterator[str]:
    """``/a/b/c`` -> ``/a``, ``/a/b``, ``/a/b/c`` (the nodes a write creates)."""
    index = path.find("/", 1)
    while index != -1:
        yield path[:index]
        index = path.find("/", index + 1)
    yield path


def _domain_leaves(domid: int, rng: random.Random) -> list[tuple[str, str]]:
    """One guest's nodes, in the shape the toolstack and backends write."""
    dom = f"/local/domain/{domid}"
    back = "/local/domain/0/backend"
    a, b, c, d, e = (rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48))
    uuid = f"{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}"
    out = [
        (f"{dom}/name", f"guest-{domid:05d}"),
        (f"{dom}/domid", str(domid)),
        (f"{dom}/vm", f"/vm/{uuid}"),
        (f"{dom}/control/shutdown", ""),
        (f"{dom}/control/feature-poweroff", "1"),
        (f"{dom}/control/feature-reboot", "1"),
        (f"{dom}/control/feature-suspend", "1"),
        (f"{dom}/memory/target", str(rng.choice((1, 2, 4, 8)) << 20)),
        (f"{dom}/memory/static-max", str(8 << 20)),
        (f"{dom}/data/updated", str(rng.getrandbits(40))),
    ]
    out += [(f"{dom}/cpu/{c}/availability", "online") for c in range(4)]
    for n in range(8):
        front, backend = f"{dom}/device/vif/{n}", f"{back}/vif/{domid}/{n}"
        mac = f"00:16:3e:{domid >> 8 & 0xFF:02x}:{domid & 0xFF:02x}:{n:02x}"
        out += [
            (f"{front}/backend", backend),
            (f"{front}/backend-id", "0"),
            (f"{front}/state", "4"),
            (f"{front}/handle", str(n)),
            (f"{front}/mac", mac),
            (f"{front}/multi-queue-num-queues", "2"),
            (f"{front}/request-rx-copy", "1"),
            (f"{front}/feature-rx-notify", "1"),
            (f"{front}/tx-ring-ref", str(rng.getrandbits(12))),
            (f"{front}/rx-ring-ref", str(rng.getrandbits(12))),
            (f"{front}/event-channel", str(rng.getrandbits(8))),
            (f"{backend}/frontend", front),
            (f"{backend}/frontend-id", str(domid)),
            (f"{backend}/online", "1"),
            (f"{backend}/state", "4"),
            (f"{backend}/script", "/etc/xen/scripts/vif-bridge"),
            (f"{backend}/mac", mac),
            (f"{backend}/bridge", f"xenbr{n % 2}"),
            (f"{backend}/handle", str(n)),
            (f"{backend}/hotplug-status", "connected"),
        ]
    for n in range(4):
        vdev = 51712 + 16 * n
        front, backend = f"{dom}/device/vbd/{vdev}", f"{back}/vbd/{domid}/{vdev}"
        out += [
            (f"{front}/backend", backend),
            (f"{front}/backend-id", "0"),
            (f"{front}/state", "4"),
            (f"{front}/virtual-device", str(vdev)),
            (f"{front}/device-type", "disk"),
            (f"{front}/ring-ref", str(rng.getrandbits(12))),
            (f"{front}/event-channel", str(rng.getrandbits(8))),
            (f"{front}/protocol", "x86_64-abi"),
            (f"{backend}/frontend", front),
            (f"{backend}/frontend-id", str(domid)),
            (f"{backend}/params", f"/var/lib/xen/images/guest-{domid}-{n}.img"),
            (f"{backend}/type", "phy"),
            (f"{backend}/mode", "w"),
            (f"{backend}/dev", f"xvd{'abcd'[n]}"),
            (f"{backend}/state", "4"),
            (f"{backend}/hotplug-status", "connected"),
        ]
    return out


def _value(natural: str, rng: random.Random) -> bytes:
    """``natural`` if it is 10-50 bytes long, else padded or cut to 10-50."""
    if 10 <= len(natural) <= 50:
        return natural.encode()
    size = rng.randint(10, 50)
    return (natural + ":" + f"{rng.getrandbits(200):050x}")[:size].encode()


def store_leaves(total: int, base: set[str], seed: int = 5) -> list[tuple[bytes, bytes]]:
    """WRITE payloads (path, value) that make a tree of exactly ``total`` nodes.

    ``base`` is what a fresh daemon's tree holds already. Writing a path
    creates its missing ancestors, which count as nodes (with empty values).
    """
    rng = random.Random(seed)
    nodes = set(base)
    leaves: list[tuple[bytes, bytes]] = []

    def add(path: str, natural: str) -> None:
        nodes.update(_prefixes(path))
        leaves.append((path.encode(), _value(natural, rng)))

    domid = 0
    while True:
        domid += 1
        candidate = _domain_leaves(domid, rng)
        new = {p for path, _ in candidate for p in _prefixes(path)} - nodes
        if len(nodes) + len(new) > total:
            break
        for path, natural in candidate:
            add(path, natural)
    # Top up with single nodes under the last whole domain.
    rest = total - len(nodes)
    last = f"/local/domain/{domid - 1}" if domid > 1 else ""
    if rest == 1:
        add(f"{last}/extra", "extra")
    for k in range(rest - 1 if rest > 1 else 0):
        add(f"{last}/attr/key{k}", f"value-{k}")
    assert len(nodes) == total, (len(nodes), total)
    return leaves


def base_nodes() -> set[str]:
    return set(Engine(Config()).tree.nodes)


def populate(socket_path: str, leaves: Sequence[tuple[bytes, bytes]], depth: int) -> float:
    """WRITE every leaf, ``depth`` in flight; returns the seconds it took."""
    wire = Wire(socket_path)
    payloads = [path + b"\0" + value for path, value in leaves]
    total = len(payloads)
    try:
        start = time.perf_counter()
        sent = min(depth, total)
        wire.send(b"".join(_request(WRITE, i, payloads[i]) for i in range(sent)))
        done = 0
        while done < total:
            replies = wire.messages()
            for type_, req_id, reply in replies:
                if type_ != WRITE or req_id != done:
                    raise BenchError(f"WRITE #{req_id}: {type_} {reply!r} (want #{done})")
                done += 1
            more = min(len(replies), total - sent)
            if more:
                wire.send(
                    b"".join(_request(WRITE, sent + i, payloads[sent + i]) for i in range(more))
                )
                sent += more
        return time.perf_counter() - start
    finally:
        wire.close()


# ------------------------------------------------------------- daemons


@dataclass
class Daemon:
    """One ``python -m pyxenstored`` process in its own session."""

    process: subprocess.Popen[bytes]
    socket_path: str
    log_path: str
    #: ``time.time()`` and ``time.perf_counter()`` just before ``exec``.
    exec_wall: float
    exec_perf: float

    @classmethod
    def start(cls, mode: str, state_dir: str, socket_path: str, log_path: str) -> Daemon:
        argv = pyxenstored_argv(socket_path, state_dir, mode)
        with open(log_path, "wb") as log:
            wall, perf = time.time(), time.perf_counter()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, socket_path, log_path, wall, perf)

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read()

    def wait_answering(self, probe: bytes) -> float:
        """Poll until a READ of ``probe`` is answered; seconds since exec."""
        deadline = self.exec_perf + START_TIMEOUT
        payload = _request(READ, 0, probe + b"\0")
        while True:
            if self.process.poll() is not None or time.perf_counter() > deadline:
                text = self.log_text().strip()
                last = text.splitlines()[-1] if text else "no output"
                raise BenchError(f"daemon did not answer (status {self.process.poll()}): {last}")
            try:
                wire = Wire(self.socket_path)
            except OSError:  # not listening yet: recovery runs first
                time.sleep(0.001)
                continue
            try:
                wire.send(payload)
                type_, _req, _reply = wire.messages()[0]
                answered = time.perf_counter()
            finally:
                wire.close()
            if type_ == ERROR:
                raise BenchError(f"READ {probe!r} failed after recovery: {_reply!r}")
            return answered - self.exec_perf

    def kill(self) -> None:
        """SIGKILL the daemon's whole session (a compaction child too)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM; the whole session is killed if the daemon lingers."""
        terminate(self.process, STOP_TIMEOUT, self.kill)


@dataclass
class LogTimes:
    restored_line: str
    #: Seconds from exec to the "restored" line's timestamp.
    exec_to_line: float
    #: Seconds from the first log line to the "restored" line.
    window: float


def _log_stamp(line: str) -> float:
    return datetime.strptime(line[:23], _LOG_TIME).timestamp()


def log_times(daemon: Daemon) -> LogTimes:
    lines = daemon.log_text().splitlines()
    stamped = [line for line in lines if len(line) > 23 and line[4] == "-" and line[19] == ","]
    restored = [line for line in stamped if " restored " in line or "starting afresh" in line]
    if not stamped or not restored:
        raise BenchError(f"no 'restored' line in the daemon's log: {lines[-3:]}")
    line = restored[-1]
    return LogTimes(
        line.split(" INFO ", 1)[-1],
        _log_stamp(line) - daemon.exec_wall,
        _log_stamp(line) - _log_stamp(stamped[0]),
    )


def wait_replayed(state_dir: str, timeout: float = 60.0) -> None:
    """Until a start would replay no journal record (the snapshot is written)."""
    deadline = time.monotonic() + timeout

    def replayed() -> bool:  # read-only: the daemon and its child are at work
        names = os.listdir(state_dir)
        snapshots = sorted(n for n in names if n.startswith("snapshot.") and n[9:].isdigit())
        segments = [n for n in names if n.startswith("journal.") and n[8:].isdigit()]
        if not snapshots:
            return False
        # A compaction rotates to segment N, writes snapshot N and deletes
        # the segments below; the idle daemon writes nothing into N.
        newest = max((int(n[8:]) for n in segments), default=-1)
        only = all(int(n[8:]) == newest for n in segments)
        done = int(snapshots[-1][9:]) == newest and only
        return done and not any(n.endswith(".tmp") for n in names)

    while not replayed():
        if time.monotonic() > deadline:
            raise BenchError(f"no snapshot of the replayed journal in {state_dir}")
        time.sleep(0.1)


def wait_quiet(state_dir: str, timeout: float = 60.0) -> None:
    """Until no snapshot is being written (a compaction has finished)."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 5 and time.monotonic() < deadline:
        busy = any(name.endswith(".tmp") for name in os.listdir(state_dir))
        calm = 0 if busy else calm + 1
        time.sleep(0.05)


def listing(state_dir: str) -> list[tuple[str, int]]:
    return [
        (name, os.path.getsize(os.path.join(state_dir, name)))
        for name in sorted(os.listdir(state_dir))
    ]


# ------------------------------------------------------------ recovery


def build_journal_only(state_dir: str, leaves: Sequence[tuple[bytes, bytes]], depth: int) -> None:
    """Every write in the journal, as the daemon records it, never compacted."""
    engine = Engine(Config())
    durable, _ = DurableState.recover(engine, state_dir, Durability.WRITE)
    conn = engine.connect_socket()
    try:
        for start in range(0, len(leaves), depth):
            for i, (path, value) in enumerate(leaves[start : start + depth]):
                engine.handle(conn, Packet(WRITE, start + i, 0, path + b"\0" + value))
            durable.record(engine)
            engine.take_effects()
            engine.take_dirty()
            for type_, req_id, reply in parse(bytearray(engine.take_output(conn))):
                if type_ != WRITE:
                    raise BenchError(f"WRITE #{req_id} failed building the journal: {reply!r}")
    finally:
        durable.close()


def _time(phases: dict[str, float], name: str, start: float) -> float:
    now = time.perf_counter()
    phases[name] = phases.get(name, 0.0) + now - start
    return now


def _recover_phases(state_dir: str) -> dict[str, float]:
    """What ``DurableState.recover`` does, step by step, each step timed (the
    snapshot of what was replayed is written later, by a background child)."""
    phases: dict[str, float] = {}
    engine = Engine(Config())
    t = time.perf_counter()
    loaded = files.load(Path(state_dir), False)
    t = _time(phases, "read + CRC (files.load)", t)
    saved = cbor2.loads(loaded.snapshot) if loaded.snapshot is not None else None
    t = _time(phases, "snapshot CBOR decode", t)
    records = [cbor2.loads(r) for r in loaded.records]
    t = _time(phases, "journal CBOR decode", t)
    image.restore(engine, saved, ())
    t = _time(phases, "build nodes from snapshot", t)
    image.restore(engine, None, records)
    t = _time(phases, "replay journal records", t)
    phases["(nodes)"] = len(engine.tree.nodes)
    return phases


def recover_child(mode: str, state_dir: str) -> None:
    """In a fresh interpreter: time recovery of ``state_dir``, print JSON.

    ``total``: ``DurableState.recover`` as the daemon calls it; ``nogc``:
    the same with the cyclic garbage collector disabled; ``phases``: its
    steps one by one (``_recover_phases``), also with the collector disabled,
    so that they add up to ``nogc``.
    """
    if mode != "total":
        gc.disable()
    if mode == "phases":
        print(json.dumps(_recover_phases(state_dir)))
        return
    engine = Engine(Config())
    start = time.perf_counter()
    durable, recovery = DurableState.recover(engine, state_dir, Durability.WRITE)
    total = time.perf_counter() - start
    durable.close()
    print(json.dumps({"seconds": total, "nodes": recovery.nodes}))


def _child(mode: str, state_dir: str) -> dict[str, float]:
    code = "import sys; from bench.persist import recover_child; recover_child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, mode, state_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"in-process recovery ({mode}) failed: {done.stderr.strip()[-500:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def recover_in_process(
    template: str, scratch: str, nodes: int
) -> tuple[float, float, dict[str, float]]:
    """Recovery of copies of ``template``, each in a fresh interpreter.

    Returns the seconds of ``DurableState.recover``, the same with the
    garbage collector disabled, and the phases.
    """
    out = []
    for mode in ("total", "nogc", "phases"):
        copy = os.path.join(scratch, f"inproc-{mode}")
        shutil.copytree(template, copy)
        try:
            result = _child(mode, copy)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        restored = result.pop("nodes", None) or result.pop("(nodes)", None)
        if restored != nodes:
            raise BenchError(f"in-process recovery ({mode}) restored {restored} nodes, not {nodes}")
        out.append(result)
    return out[0]["seconds"], out[1]["seconds"], out[2]


@dataclass
class RecoveryCase:
    name: str
    listing: list[tuple[str, int]]
    restored: str = ""
    exec_to_read: list[float] = field(default_factory=list)
    exec_to_log: list[float] = field(default_factory=list)
    log_window: list[float] = field(default_factory=list)
    in_process: list[float] = field(default_factory=list)
    in_process_nogc: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)

    def medians(self) -> dict[str, float]:
        return {
            "exec_to_read_s": statistics.median(self.exec_to_read),
            "exec_to_log_s": statistics.median(self.exec_to_log),
            "log_window_s": statistics.median(self.log_window),
            "in_process_s": statistics.median(self.in_process),
            "in_process_nogc_s": statistics.median(self.in_process_nogc),
        }

    def median_phases(self) -> dict[str, float]:
        names = self.phases[0] if self.phases else {}
        return {name: statistics.median(p.get(name, 0.0) for p in self.phases) for name in names}


@dataclass
class RecoveryReport:
    nodes: int
    leaves: int
    domains: int
    value_bytes: int
    populate_s: float
    cases: list[RecoveryCase]


def measure_case(
    case: RecoveryCase, template: str, scratch: str, repeats: int, probe: bytes, nodes: int
) -> None:
    for n in range(repeats):
        run = os.path.join(scratch, f"{case.name.replace(' ', '-')}-{n}")
        state = os.path.join(run, "state")
        os.makedirs(run)
        shutil.copytree(template, state)
        daemon = Daemon.start(
            "write", state, os.path.join(run, "socket"), os.path.join(run, "daemon.log")
        )
        try:
            case.exec_to_read.append(daemon.wait_answering(probe))
        finally:
            daemon.kill()
        times = log_times(daemon)
        if f"restored {nodes} nodes" not in times.restored_line:
            raise BenchError(f"expected {nodes} nodes: {times.restored_line}")
        case.restored = times.restored_line
        case.exec_to_log.append(times.exec_to_line)
        case.log_window.append(times.window)
        total, nogc, phases = recover_in_process(template, run, nodes)
        case.in_process.append(total)
        case.in_process_nogc.append(nogc)
        case.phases.append(phases)
        shutil.rmtree(run, ignore_errors=True)


def recovery_benchmark(args: argparse.Namespace, scratch: str) -> RecoveryReport:
    base = base_nodes()
    leaves = store_leaves(args.nodes, base)
    probe = leaves[-1][0]
    domains = len({path.split(b"/")[3] for path, _ in leaves if path.startswith(b"/local/domain/")})
    say = _progress(args)

    # The daemon, populated, then killed: "as killed".
    live = os.path.join(scratch, "live")
    os.makedirs(live)
    state = os.path.join(live, "state")
    daemon = Daemon.start(
        "write", state, os.path.join(live, "socket"), os.path.join(live, "daemon.log")
    )
    try:
        daemon.wait_answering(b"/")
        say(f"populating {args.nodes:,} nodes ({len(leaves):,} writes) ...")
        populate_s = populate(daemon.socket_path, leaves, args.depth)
        wait_quiet(state)
    finally:
        daemon.kill()
    as_killed = os.path.join(scratch, "as-killed")
    shutil.copytree(state, as_killed)

    # Restarted once, which writes a snapshot of what it replayed in the
    # background, and killed once that is done.
    daemon = Daemon.start(
        "write", state, os.path.join(live, "socket"), os.path.join(live, "daemon2.log")
    )
    try:
        daemon.wait_answering(probe)
        wait_replayed(state)
    finally:
        daemon.kill()
    fresh = os.path.join(scratch, "fresh-snapshot")
    shutil.copytree(state, fresh)

    say("writing the journal-only state directory in-process ...")
    journal_only = os.path.join(scratch, "journal-only")
    build_journal_only(journal_only, leaves, args.depth)

    cases = [
        RecoveryCase("fresh snapshot", listing(fresh)),
        RecoveryCase("journal only", listing(journal_only)),
        RecoveryCase("as killed", listing(as_killed)),
    ]
    for case, template in zip(cases, (fresh, journal_only, as_killed), strict=True):
        say(f"recovering '{case.name}' x {args.repeats} ...")
        measure_case(case, template, scratch, args.repeats, probe, args.nodes)
    return RecoveryReport(
        args.nodes,
        len(leaves),
        domains,
        sum(len(value) for _, value in leaves),
        populate_s,
        cases,
    )


# ---------------------------------------------------------- throughput


@dataclass
class ThroughputReport:
    depth: int
    seconds: float
    rounds: list[dict[str, Result]]

    def rates(self, mode: str) -> list[float]:
        return [r[mode].rate for r in self.rounds]

    def median(self, mode: str) -> float:
        return statistics.median(self.rates(mode))

    def ratio(self, mode: str) -> float:
        none = self.median("none")
        return self.median(mode) / none if none else 0.0

    def round_ratios(self, mode: str) -> list[float]:
        return [r[mode].rate / r["none"].rate for r in self.rounds]


def throughput_benchmark(args: argparse.Namespace, scratch: str) -> ThroughputReport:
    value = b"v" * args.value_size
    say = _progress(args)
    daemons: dict[str, Daemon] = {}
    try:
        for mode in MODES:
            run = os.path.join(scratch, f"tp-{mode}")
            os.makedirs(run)
            daemons[mode] = Daemon.start(
                mode,
                os.path.join(run, "state"),
                os.path.join(run, "socket"),
                os.path.join(run, "daemon.log"),
            )
        for daemon in daemons.values():
            daemon.wait_answering(b"/")
            setup_keys(daemon.socket_path, value, args.keys)
            # Warm up (imports, caches) outside the measured rounds.
            pipelined(daemon.socket_path, WRITE, value, args.keys, 0.3, args.depth)
        rounds = []
        for n in range(args.rounds):
            say(f"throughput round {n + 1}/{args.rounds} ...")
            rounds.append(
                {
                    mode: pipelined(
                        daemon.socket_path, WRITE, value, args.keys, args.seconds, args.depth
                    )
                    for mode, daemon in daemons.items()
                }
            )
    finally:
        for daemon in daemons.values():
            daemon.stop()
    return ThroughputReport(args.depth, args.seconds, rounds)


# -------------------------------------------------------------- output


def _progress(args: argparse.Namespace) -> Any:
    def say(text: str) -> None:
        if not args.quiet:
            print(f"# {text}", file=sys.stderr, flush=True)

    return say


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def format_recovery(report: RecoveryReport) -> str:
    lines = [
        f"recovery of {report.nodes:,} nodes ({report.leaves:,} writes over "
        f"{report.domains} domains, {report.value_bytes / report.leaves:.0f} bytes/value "
        f"on average; populated in {report.populate_s:.1f} s), "
        f"median of {len(report.cases[0].exec_to_read)}:",
        "",
    ]
    columns = ("exec->READ", "exec->log", "log window", "in-process", "  ...gc off")
    keys = ("exec_to_read_s", "exec_to_log_s", "log_window_s", "in_process_s", "in_process_nogc_s")
    header = f"{'case':<16}" + "".join(f"{name:>12}" for name in columns)
    lines += [header, "-" * len(header)]
    for case in report.cases:
        m = case.medians()
        lines.append(f"{case.name:<16}" + "".join(f"{m[key]:>11.3f}s" for key in keys))
    worst = max(case.medians()["exec_to_read_s"] for case in report.cases)
    lines += [
        "",
        f"target: exec->READ under {RECOVERY_TARGET_S:.0f} s in every case: "
        f"{_met(worst < RECOVERY_TARGET_S)} (worst {worst:.3f} s)",
    ]
    for case in report.cases:
        lines += ["", f"{case.name}: {case.restored.split(' (/', 1)[0]}"]
        lines.append("  state dir: " + ", ".join(f"{n} ({s:,} B)" for n, s in case.listing))
        lines.append("  in-process DurableState.recover, phases (median, gc off):")
        for name, seconds in case.median_phases().items():
            lines.append(f"    {name:<32}{seconds * 1000:>9.1f} ms")
        m = case.medians()
        lines.append(
            f"  exec->READ {m['exec_to_read_s']:.3f} s = start-up, imports and listening "
            f"{m['exec_to_read_s'] - m['log_window_s']:.3f} s + restore in the daemon "
            f"{m['log_window_s']:.3f} s; in a bare interpreter the restore takes "
            f"{m['in_process_s']:.3f} s, {m['in_process_nogc_s']:.3f} s without cyclic gc"
        )
    return "\n".join(lines)


def format_throughput(report: ThroughputReport) -> str:
    lines = [
        f"pipelined writes (depth {report.depth}), {len(report.rounds)} interleaved rounds "
        f"of {report.seconds:g} s per mode:",
        "",
    ]
    header = f"{'mode':<8}{'median ops/s':>14}{'x none':>9}   rounds (ops/s)"
    lines += [header, "-" * len(header)]
    for mode in MODES:
        rounds = ", ".join(f"{rate:,.0f}" for rate in report.rates(mode))
        lines.append(
            f"{mode:<8}{report.median(mode):>14,.0f}{report.ratio(mode):>8.2f}x   {rounds}"
        )
    ratio = report.ratio("write")
    per_round = ", ".join(f"{r:.2f}" for r in report.round_ratios("write"))
    lines += [
        "",
        f"write/none per round: {per_round}",
        f"target: write >= {THROUGHPUT_TARGET} x none: {_met(ratio >= THROUGHPUT_TARGET)} "
        f"({ratio:.2f})",
    ]
    return "\n".join(lines)


def as_json(recovery: RecoveryReport | None, throughput: ThroughputReport | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
    }
    if recovery is not None:
        document["recovery"] = {
            "nodes": recovery.nodes,
            "writes": recovery.leaves,
            "domains": recovery.domains,
            "populate_s": recovery.populate_s,
            "target_s": RECOVERY_TARGET_S,
            "cases": [
                {
                    "case": case.name,
                    "restored": case.restored,
                    "state_dir": dict(case.listing),
                    **case.medians(),
                    "runs": {
                        "exec_to_read_s": case.exec_to_read,
                        "exec_to_log_s": case.exec_to_log,
                        "log_window_s": case.log_window,
                        "in_process_s": case.in_process,
                        "in_process_nogc_s": case.in_process_nogc,
                    },
                    "phases_s": case.median_phases(),
                }
                for case in recovery.cases
            ],
        }
    if throughput is not None:
        document["throughput"] = {
            "depth": throughput.depth,
            "seconds": throughput.seconds,
            "target_ratio": THROUGHPUT_TARGET,
            "median_ops_per_s": {mode: throughput.median(mode) for mode in MODES},
            "ratio_to_none": {mode: throughput.ratio(mode) for mode in MODES},
            "rounds_ops_per_s": {mode: throughput.rates(mode) for mode in MODES},
        }
    return document


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench persist", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--nodes", type=int, default=120_000, help="store size (default 120000)")
    parser.add_argument("--repeats", type=int, default=3, help="restarts per case (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and mode (default 2)")
    parser.add_argument("--depth", type=int, default=64, help="pipeline depth (default 64)")
    parser.add_argument("--keys", type=int, default=256, help="throughput nodes (default 256)")
    parser.add_argument("--value-size", type=int, default=64, help="throughput value bytes")
    parser.add_argument(
        "--only", choices=("recovery", "throughput"), help="run one of the two measurements"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.nodes < len(base_nodes()) + 1 or args.repeats < 1 or args.rounds < 1:
        parser.error("--nodes, --repeats and --rounds are too small")
    return args


@contextmanager
def _scratch() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="xsbench-persist-", dir="/tmp")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    recovery = throughput = None
    try:
        with _scratch() as scratch:
            if args.only in (None, "recovery"):
                recovery = recovery_benchmark(args, scratch)
            if args.only in (None, "throughput"):
                throughput = throughput_benchmark(args, scratch)
    except BenchError as exc:
        print(f"python -m bench persist: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(as_json(recovery, throughput), indent=2))
    else:
        parts = []
        if recovery is not None:
            parts.append(format_recovery(recovery))
        if throughput is not None:
            parts.append(format_throughput(throughput))
        print("\n\n".join(parts))
    missed = False
    if recovery is not None:
        missed |= any(c.medians()["exec_to_read_s"] >= RECOVERY_TARGET_S for c in recovery.cases)
    if throughput is not None:
        missed |= throughput.ratio("write") < THROUGHPUT_TARGET
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
