"""``python -m bench live-update``: the service pause of one live update (issue 6).

For each store size (``--nodes``, default 1,000, 10,000 and 120,000 nodes)
and each daemon (``--targets``, default pyxenstored and C), ``--repeats``
times: a fresh daemon runs on the stand-in hypervisor (``tests/fakexen``,
docs/testing.md), gets the same realistic store as ``bench persist``
(``persist.store_leaves``: guests' ``/local/domain/<d>/...`` with vif and
vbd front- and backends, values of 10-50 bytes, written pipelined; the
leaves are chosen against the daemon's own initial tree, so both hold
exactly the same number of nodes), and is live-updated once by Xen's own
tool::

    XENSTORED_PATH=<socket> xenstore-control live-update <binary>

pyxenstored's "new binary" is a wrapper script that runs this checkout's
``python -m pyxenstored "$@"`` (what ``tests/integration/test_live_update.py``
uses); C's is Debian's ``/usr/lib/xen-4.17/bin/xenstored`` itself, which
execs itself with ``-U`` and restores from its state dump in
``$XENSTORED_RUNDIR`` (this works under the stand-in with neither ``-t``
nor ``-F``: no transaction is open). A fresh daemon per update, because C
under the stand-in survives one live update but not a second (the
stand-in's ``xenevtchn_fdopen`` hands the new instance a fresh event
channel handle, "not supported yet" in docs/testing.md, and the second
update dies with ``FATAL: xce_handle poll failed``).

Meanwhile one client pings: a READ of a leaf, the next one sent as soon as
the reply came, each timestamped. The **pause** of an update is the longest
time the pinger waited for a reply among the pings that were outstanding
at some moment between the start of ``xenstore-control`` and its exit; the
**gap** is the longest interval between two consecutive replies in that
window (the pause plus the pinger's own turn-around). ``xenstore-control``
is timed from ``exec`` to its exit (which is when the requester's ``OK``
came from the new instance). For pyxenstored its log gives the time from
its ``handing over`` line (the new instance, started beside it, has loaded
the store and is ready) to the new instance's ``took over`` line: the
handover proper, inside the pause. The table gives the median of the repeats for each
figure, and the pinger's median latency before the update as a baseline.
After each update 200 random leaves are read back and must hold what was
written, and the daemon must still be running (C's exec keeps the pid;
pyxenstored's ``--no-fork`` process stays as the anchor of its successors).

Example::

    .venv/bin/python -m bench live-update
    .venv/bin/python -m bench live-update --nodes 1000,20000 --repeats 5 --json
    .venv/bin/python -m bench live-update --targets pyxenstored --nodes 120000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.persist import populate, store_leaves, wait_quiet
from bench.workloads import ERROR, HEADER, READ, BenchError, Wire
from drills.daemon import pyxenstored_argv, terminate

XEN_BIN = Path("/usr/lib/xen-4.17/bin")
XENSTORE_CONTROL = XEN_BIN / "xenstore-control"
C_XENSTORED = XEN_BIN / "xenstored"
ROOT = Path(__file__).resolve().parent.parent
DIRECTORY = 1
#: Seconds to wait for a daemon to start, a reply, or xenstore-control.
START_TIMEOUT = 30.0
CONTROL_TIMEOUT = 300.0
STOP_TIMEOUT = 10.0
#: Pinging before an update starts, and after xenstore-control exits.
LEAD_S = 0.3
TAIL_S = 0.3
DEFAULT_NODES = (1_000, 10_000, 120_000)
TARGET_NAMES = ("pyxenstored", "c")
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


# ------------------------------------------------------------- daemons


def write_wrapper(path: Path, python: str = sys.executable) -> Path:
    """The "new binary" for pyxenstored: this checkout behind a shell script."""
    path.write_text(f'#!/bin/sh\ncd {ROOT}\nexec {python} -m pyxenstored "$@"\n')
    path.chmod(0o755)
    return path


@dataclass
class Daemon:
    """A daemon on the stand-in hypervisor, its socket, and its new binary."""

    name: str
    process: subprocess.Popen[bytes]
    socket_path: str
    log_path: Path
    binary: str
    run_dir: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_text().strip().splitlines()[-5:]
            raise BenchError(
                f"{self.name} exited (status {self.process.returncode}): " + " | ".join(tail)
            )

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers), as the drills stop theirs."""
        terminate(self.process, STOP_TIMEOUT)


def control_env(socket_path: str) -> dict[str, str]:
    """The environment of ``xenstore-control``: no preload, the daemon's socket."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["XENSTORED_PATH"] = socket_path
    return env


def start_daemon(name: str, scratch: Path, library: Path, support: Any) -> Daemon:
    """Lay out a stand-in under ``scratch`` and start ``name`` on it."""
    fx = support.FakeXen(scratch / "fx")
    run = scratch / "run"
    run.mkdir(parents=True)
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=str(library),
        FAKEXEN_DIR=str(fx.root),
        XENSTORED_RUNDIR=str(run),
        XENSTORED_PATH=str(run / "socket"),
    )
    if name == "pyxenstored":
        argv = pyxenstored_argv(run / "socket", run / "state")
        binary = str(write_wrapper(scratch / "pyxenstored-new"))
    else:
        argv = [str(C_XENSTORED), "--no-fork"]
        binary = str(C_XENSTORED)
    log = run / "daemon.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    daemon = Daemon(name, process, str(run / "socket"), log, binary, run)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        daemon.check_alive()
        try:
            Wire(daemon.socket_path).close()
            return daemon
        except OSError:
            if time.monotonic() > deadline:
                daemon.stop()
                raise BenchError(f"{name} did not listen within {START_TIMEOUT:g} s") from None
            time.sleep(0.02)


def walk(wire: Wire, path: bytes = b"/") -> set[str]:
    """Every node under ``path`` (DIRECTORY, recursively): a fresh daemon's base."""
    nodes = {path.decode()}
    listing = wire.call(DIRECTORY, path + b"\0")
    for child in listing.split(b"\0"):
        if child:
            nodes |= walk(wire, (path.rstrip(b"/") + b"/" + child))
    return nodes


# ------------------------------------------------------------- one update


@dataclass
class Ping:
    sent: float
    answered: float

    @property
    def latency(self) -> float:
        return self.answered - self.sent


@dataclass
class Update:
    """One live update as the pinger saw it."""

    control_s: float
    pause_s: float
    gap_s: float
    pings_in_window: int
    #: The pinger's median latency before the update started.
    baseline_s: float
    #: pyxenstored's own log: from ``handing over`` to ``took over``
    #: (millisecond stamps), i.e. the handover inside the pause.
    handover_s: float | None = None


def live_update(daemon: Daemon, probe: bytes, expected: bytes) -> Update:
    """Ping with READs of ``probe`` while ``xenstore-control live-update`` runs."""
    wire = Wire(daemon.socket_path)
    wire.sock.settimeout(CONTROL_TIMEOUT)
    request = HEADER.pack(READ, 7, 0, len(probe) + 1) + probe + b"\0"
    pings: list[Ping] = []
    ended: list[float] = []
    result: list[subprocess.CompletedProcess[bytes]] = []

    def ping() -> None:
        sent = time.perf_counter()
        wire.send(request)
        messages = wire.messages()
        answered = time.perf_counter()
        if len(messages) != 1 or messages[0][0] != READ or messages[0][2] != expected:
            raise BenchError(f"ping READ {probe!r} answered {messages!r}")
        pings.append(Ping(sent, answered))

    def control() -> None:
        result.append(
            subprocess.run(
                [str(XENSTORE_CONTROL), "live-update", daemon.binary],
                env=control_env(daemon.socket_path),
                capture_output=True,
                timeout=CONTROL_TIMEOUT,
            )
        )
        ended.append(time.perf_counter())

    try:
        lead_until = time.perf_counter() + LEAD_S
        while time.perf_counter() < lead_until:
            ping()
        before = len(pings)
        thread = threading.Thread(target=control, daemon=True)
        started = time.perf_counter()
        thread.start()
        while not ended or time.perf_counter() < ended[0] + TAIL_S:
            ping()
            if not thread.is_alive() and not ended:
                raise BenchError("xenstore-control did not finish")
        thread.join()
    finally:
        wire.close()
    done = result[0]
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        raise BenchError(f"xenstore-control live-update failed ({done.returncode}): {output}")
    daemon.check_alive()
    finished = ended[0]
    window = [p for p in pings if p.answered >= started and p.sent <= finished]
    answers = [p.answered for p in pings]
    gaps = [
        b - a
        for a, b in zip(answers, answers[1:], strict=False)
        if b >= started and a <= finished
    ]
    return Update(
        control_s=finished - started,
        pause_s=max((p.latency for p in window), default=0.0),
        gap_s=max(gaps, default=0.0),
        pings_in_window=len(window),
        baseline_s=statistics.median(p.latency for p in pings[:before]),
        handover_s=handover_time(daemon.log_text()),
    )


def _stamp(line: str) -> float | None:
    try:
        return datetime.strptime(line[:23], LOG_TIME).timestamp()
    except ValueError:
        return None


def handover_time(log: str) -> float | None:
    """Seconds between pyxenstored's last ``handing over`` line and the
    ``took over`` line after it (None for C, which logs neither)."""
    lines = log.splitlines()
    execs = [i for i, line in enumerate(lines) if "handing over" in line]
    if not execs:
        return None
    after = [line for line in lines[execs[-1] :] if "took over" in line]
    start, end = _stamp(lines[execs[-1]]), _stamp(after[0]) if after else None
    return None if start is None or end is None else end - start


# ------------------------------------------------------------- the run


@dataclass
class Case:
    target: str
    nodes: int
    populate_s: float = 0.0
    updates: list[Update] = field(default_factory=list)
    error: str | None = None

    def median(self, name: str) -> float:
        return statistics.median(getattr(u, name) for u in self.updates)

    def median_or_none(self, name: str) -> float | None:
        values = [getattr(u, name) for u in self.updates if getattr(u, name) is not None]
        return statistics.median(values) if values else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "nodes": self.nodes}
        if self.error is not None:
            out["error"] = self.error
            return out
        out["populate_s"] = self.populate_s
        for name in ("pause_s", "gap_s", "control_s", "baseline_s", "handover_s"):
            out[name] = self.median_or_none(name)
        out["updates"] = [vars(u) for u in self.updates]
        return out


def measure(
    target: str, nodes: int, repeats: int, library: Path, support: Any, scratch: Path, say: Any
) -> Case:
    """``repeats`` fresh daemons, each populated and live-updated once (see
    the module docstring for why not one daemon updated ``repeats`` times)."""
    case = Case(target, nodes)
    for n in range(repeats):
        directory = scratch / f"{target}-{nodes}-{n}"
        directory.mkdir()
        daemon = start_daemon(target, directory, library, support)
        try:
            wire = Wire(daemon.socket_path)
            try:
                base = walk(wire)
            finally:
                wire.close()
            leaves = store_leaves(nodes, base)
            say(f"{target}, {nodes:,} nodes, update {n + 1}/{repeats}: populating "
                f"({len(leaves):,} writes) ...")
            case.populate_s = populate(daemon.socket_path, leaves, 64)
            if target == "pyxenstored":
                wait_quiet(str(daemon.run_dir / "state"))  # no compaction under way
            probe, expected = leaves[len(leaves) // 2]
            say(f"{target}, {nodes:,} nodes, update {n + 1}/{repeats}: live update ...")
            case.updates.append(live_update(daemon, probe, expected))
            check_store(daemon, leaves)
        except OSError as exc:
            raise BenchError(f"{target}: {exc!r}; log: {daemon.log_text()[-500:]}") from exc
        finally:
            daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return case


def check_store(daemon: Daemon, leaves: list[tuple[bytes, bytes]], sample: int = 200) -> None:
    """A sample of leaves still holds what was written, read pipelined."""
    rng = random.Random(len(leaves))
    chosen = rng.sample(leaves, min(sample, len(leaves)))
    wire = Wire(daemon.socket_path)
    try:
        wire.send(
            b"".join(
                HEADER.pack(READ, i, 0, len(path) + 1) + path + b"\0"
                for i, (path, _) in enumerate(chosen)
            )
        )
        replies: list[tuple[int, int, bytes]] = []
        while len(replies) < len(chosen):
            replies += wire.messages()
    finally:
        wire.close()
    for (type_, req_id, payload), (path, value) in zip(replies, chosen, strict=True):
        if type_ == ERROR or payload != value:
            raise BenchError(
                f"{daemon.name}: after the updates, READ {path!r} (#{req_id}) gave "
                f"{payload!r}, not {value!r}"
            )


def run(args: argparse.Namespace) -> tuple[list[Case], dict[str, str]]:
    from drills import fakexen  # the stand-in's helpers, kept with the tests

    say = _progress(args)
    unavailable: dict[str, str] = {}
    if not XENSTORE_CONTROL.exists():
        raise BenchError(f"{XENSTORE_CONTROL} is not installed (Debian's xen-utils-4.17)")
    try:
        library = fakexen.build()
        support, _ = fakexen.helpers()
    except fakexen.Unavailable as exc:
        raise BenchError(f"the stand-in hypervisor cannot run here: {exc}") from exc
    targets = list(args.target_names)
    if "c" in targets and not C_XENSTORED.exists():
        unavailable["c"] = f"{C_XENSTORED} is not installed"
        targets.remove("c")
    cases = []
    with _scratch() as scratch:
        for nodes in args.node_counts:
            for target in targets:
                try:
                    cases.append(
                        measure(target, nodes, args.repeats, library, support, scratch, say)
                    )
                except BenchError as exc:
                    say(f"{target}, {nodes:,} nodes: {exc}")
                    cases.append(Case(target, nodes, error=str(exc)))
    return cases, unavailable


@contextmanager
def _scratch() -> Iterator[Path]:
    directory = tempfile.mkdtemp(prefix="xsbench-lu-", dir="/tmp")
    try:
        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _progress(args: argparse.Namespace) -> Any:
    def say(text: str) -> None:
        if not args.quiet:
            print(f"# {text}", file=sys.stderr, flush=True)

    return say


# ------------------------------------------------------------- output


def format_table(cases: list[Case], unavailable: dict[str, str], repeats: int) -> str:
    lines = [
        f"service pause of one live update (xenstore-control live-update), "
        f"median of {repeats} updates per case:",
        "",
    ]
    header = (
        f"{'daemon':<13}{'nodes':>9}{'pause':>10}{'gap':>10}{'control':>10}"
        f"{'baseline':>10}{'handover':>17}   pauses of each update"
    )
    lines += [header, "-" * len(header)]
    for case in cases:
        if case.error is not None:
            lines.append(f"{case.target:<13}{case.nodes:>9,}   failed: {case.error}")
            continue
        each = ", ".join(f"{u.pause_s * 1000:.0f}" for u in case.updates)
        adopted = case.median_or_none("handover_s")
        shown = "-" if adopted is None else f"{adopted * 1000:.0f}ms"
        lines.append(
            f"{case.target:<13}{case.nodes:>9,}"
            f"{case.median('pause_s') * 1000:>8.1f}ms{case.median('gap_s') * 1000:>8.1f}ms"
            f"{case.median('control_s') * 1000:>8.1f}ms"
            f"{case.median('baseline_s') * 1e6:>8.0f}us{shown:>17}   {each} ms"
        )
    by_key = {(c.target, c.nodes): c for c in cases if c.error is None}
    ratios = []
    for (target, nodes), case in by_key.items():
        c = by_key.get(("c", nodes))
        if target == "pyxenstored" and c is not None and c.median("pause_s") > 0:
            ratio = case.median("pause_s") / c.median("pause_s")
            ratios.append(f"{nodes:,} nodes {ratio:.1f}x")
    lines.append("")
    lines.append(
        "pause: longest wait for a reply by a ping outstanding during the update; gap: longest "
        "time between two replies; control: xenstore-control's run time; baseline: median "
        "ping latency before the update; handover: pyxenstored's log, from the old instance "
        "handing over to the new one (which had loaded the store beside it) taking over"
    )
    if ratios:
        lines.append("pyxenstored/C pause: " + ", ".join(ratios))
    for name, reason in unavailable.items():
        lines.append(f"{name}: unavailable ({reason})")
    return "\n".join(lines)


def as_json(cases: list[Case], unavailable: dict[str, str], repeats: int) -> dict[str, Any]:
    return {
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "repeats": repeats,
        "cases": [case.as_json() for case in cases],
        "unavailable": unavailable,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench live-update",
        description=(__doc__ or "").splitlines()[0],
        epilog="See bench/liveupdate.py's docstring for what is measured.",
    )
    parser.add_argument(
        "--nodes",
        default=",".join(str(n) for n in DEFAULT_NODES),
        help="comma-separated store sizes (default 1000,10000,120000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="updates per case (default 3)")
    parser.add_argument(
        "--targets", default=",".join(TARGET_NAMES), help="pyxenstored and/or c (default both)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    try:
        args.node_counts = [int(n.replace("_", "")) for n in args.nodes.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--nodes: not a list of numbers: {args.nodes!r}")
    if not args.node_counts or min(args.node_counts) < 20 or args.repeats < 1:
        parser.error("--nodes must be at least 20 and --repeats at least 1")
    args.target_names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.target_names if t not in TARGET_NAMES]
    if unknown or not args.target_names:
        parser.error(f"unknown target(s) {unknown}: choose from {', '.join(TARGET_NAMES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cases, unavailable = run(args)
    except BenchError as exc:
        print(f"python -m bench live-update: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(as_json(cases, unavailable, args.repeats), indent=2))
    else:
        print(format_table(cases, unavailable, args.repeats))
    return 0 if cases and all(case.error is None for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
