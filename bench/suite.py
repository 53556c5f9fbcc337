"""The comparison run: every workload against every daemon, interleaved.

``run`` takes daemons that are already running (``targets.launch_all``)
and, for each repeat, for each workload, for each daemon, runs the
workload, so that a drift of the machine (another process, the CPU's
clock) spreads over all daemons instead of favouring one. ``summarise``
takes the median of the repeats of each figure and its ratio to the C
daemon's; ``evaluate`` checks the issue's targets on those ratios;
``format_report`` and ``as_json`` print them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import bigstore, ringload, storm, xstest
from bench.targets import Running, TargetUnavailable
from bench.workloads import (
    READ,
    WRITE,
    BenchError,
    Result,
    idle_connections,
    latency_rows,
    pipelined,
    sequential,
    setup_keys,
    transactions,
    watch_fanout,
)

#: The daemon every ratio is taken against.
REFERENCE = "c"


@dataclass(frozen=True)
class Params:
    seconds: float = 2.0
    depth: int = 64
    value_size: int = 64
    keys: int = 256
    watchers: tuple[int, ...] = (10, 100)
    storm_vms: tuple[int, ...] = (50, 300)
    nodes: int = 120_000
    idle: int = 1_000
    xstest_iterations: int = 1_000
    #: test-xenstore runs per measurement, sharing the iterations.
    xstest_rounds: int = 5
    tx_writes: int = 10

    @property
    def value(self) -> bytes:
        return b"v" * self.value_size

    @property
    def ring_domid(self) -> int:
        """The guest on a ring: the domain after the storm's last."""
        return max(self.storm_vms, default=0) + 1


#: ``--quick``: tiny figures, for the tests (a few seconds in all).
QUICK = Params(seconds=0.2, keys=32, watchers=(3, 10), storm_vms=(3, 5), nodes=500, idle=20,
               xstest_iterations=5, xstest_rounds=1)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    run: Callable[[Running, Params], list[Result]]
    #: Part of a run without ``--only``.
    default: bool = True


def _keyed(result: Result, key: str) -> Result:
    result.key = key
    return result


def _daemon_cpu(key: str, per: str, count: int, cpu: float) -> Result:
    """The daemon's CPU time per unit of work: unlike a rate, it does not
    depend on how fast the one load generator (sharing the cores) keeps up."""
    return Result(f"  daemon CPU per {per}", "us", count, 0.0, key=f"{key}.cpu",
                  value=1e6 * cpu / count if count else 0.0, lower_is_better=True)


def _fanout(target: Running, p: Params) -> list[Result]:
    rows = []
    for n in p.watchers:
        before = target.cpu_seconds()
        result = _keyed(watch_fanout(target.socket_path, n, p.seconds), f"fanout-{n}")
        cpu = target.cpu_seconds() - before
        rows += [result, _daemon_cpu(f"fanout-{n}", "event", result.count, cpu)]
    return rows


def _xstest(target: Running, p: Params) -> list[Result]:
    """``xstest_rounds`` runs of test-xenstore sharing the iterations; each
    test's figure is the median of the runs' means (a run is one process,
    which the scheduler places near the daemon or not: see docs)."""
    rounds = max(1, p.xstest_rounds)
    iterations = max(1, p.xstest_iterations // rounds)
    runs = [xstest.run(target.socket_path, iterations) for _ in range(rounds)]
    failures = {name: why for run in runs for name, why in run.failures.items()}
    if failures:
        failed = ", ".join(f"{name} {why}" for name, why in failures.items())
        raise BenchError(f"test-xenstore: failed: {failed}")
    results = []
    for index, t in enumerate(runs[0].times):
        means = [run.times[index].avg_ns / 1000 for run in runs]
        results.append(
            Result(f"  {t.name}", "us", iterations * rounds, 0.0, key=f"xstest.{t.name}",
                   value=statistics.median(means), lower_is_better=True,
                   details={"runs": rounds, "runs_spread_us": max(means) - min(means),
                            "min_us": min(run.times[index].min_ns for run in runs) / 1000,
                            "max_us": max(run.times[index].max_ns for run in runs) / 1000})
        )
    return results


def _idle(target: Running, p: Params) -> list[Result]:
    return idle_connections(target.socket_path, p.idle, p.seconds, p.keys, p.value,
                            target.rss_kib)


def _big(target: Running, p: Params) -> list[Result]:
    return bigstore.big_store(target.socket_path, p.nodes, p.depth, target.rss_kib)


def _storm(target: Running, p: Params) -> list[Result]:
    rows = []
    for n in p.storm_vms:
        before = target.cpu_seconds()
        r = storm.storm(target.socket_path, n)
        cpu = target.cpu_seconds() - before
        details: dict[str, float] = {"requests": r.requests, "transactions": r.transactions}
        rows += [
            Result(f"boot storm, {n} VMs", "s", n, r.seconds, details, key=f"storm-{n}.seconds",
                   value=r.seconds, lower_is_better=True),
            Result("  EAGAIN retries", "retries", n, r.seconds, details,
                   key=f"storm-{n}.eagain", value=float(r.eagain), lower_is_better=True),
            _daemon_cpu(f"storm-{n}", "request", r.requests, cpu),
        ]
    return rows


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("seq-write", "sequential WRITEs, one client",
                 lambda t, p: latency_rows(
                     sequential(t.socket_path, WRITE, p.value, p.keys, p.seconds), "seq-write")),
        Workload("seq-read", "sequential READs, one client",
                 lambda t, p: latency_rows(
                     sequential(t.socket_path, READ, p.value, p.keys, p.seconds), "seq-read")),
        Workload("pipe-write", "pipelined WRITEs",
                 lambda t, p: [_keyed(pipelined(t.socket_path, WRITE, p.value, p.keys, p.seconds,
                                                p.depth), "pipe-write")]),
        Workload("pipe-read", "pipelined READs",
                 lambda t, p: [_keyed(pipelined(t.socket_path, READ, p.value, p.keys, p.seconds,
                                                p.depth), "pipe-read")]),
        Workload("tx", "transactions of 10 writes, one client",
                 lambda t, p: [_keyed(transactions(t.socket_path, p.seconds, p.tx_writes), "tx")]),
        Workload("fanout", "watch fan-out", _fanout),
        Workload("xstest", "Xen's test-xenstore -i N", _xstest),
        Workload("idle", "many idle connections", _idle),
        Workload("big", "a store of 120,000 nodes", _big),
        Workload("storm", "boot storm (bench/storm.py)", _storm),
        # Only with --only: see bench/ringload.py (C's ring stalls now and then).
        Workload("rings", "reads by a guest over its ring (bench/ringload.py)",
                 lambda t, p: ringload.ring_reads(t, p.ring_domid, p.keys, p.value, p.seconds),
                 default=False),
    )
}


# ------------------------------------------------------------- the run


@dataclass
class Collected:
    """Every measurement, by target and row key, in the order first seen."""

    results: dict[str, dict[str, list[Result]]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Targets that died during the run, and why.
    lost: dict[str, str] = field(default_factory=dict)

    def add(self, target: str, results: list[Result]) -> None:
        rows = self.results.setdefault(target, {})
        for result in results:
            if result.key not in self.order:
                self.order.append(result.key)
            rows.setdefault(result.key, []).append(result)


def describe(results: list[Result]) -> str:
    """One line of progress for a measurement."""
    parts = []
    for r in results[:4]:
        parts.append(f"{r.name.strip()} {_number(r.figure)} {r.unit}")
    return "; ".join(parts) + (" ..." if len(results) > 4 else "")


def warm_up(target: Running, p: Params) -> None:
    """Keys for the read workloads, and a moment of each kind of load."""
    setup_keys(target.socket_path, p.value, p.keys)
    seconds = min(0.3, p.seconds)
    pipelined(target.socket_path, WRITE, p.value, p.keys, seconds, p.depth)
    pipelined(target.socket_path, READ, p.value, p.keys, seconds, p.depth)


def run(
    targets: dict[str, Running],
    workloads: Sequence[Workload],
    p: Params,
    repeats: int,
    say: Callable[[str], None] = lambda _: None,
) -> Collected:
    collected = Collected()
    live = dict(targets)
    for name, target in list(live.items()):
        try:
            warm_up(target, p)
        except (BenchError, OSError) as exc:
            collected.lost[name] = f"warm-up: {exc}"
            del live[name]
    for repeat in range(1, repeats + 1):
        for workload in workloads:
            for name, target in list(live.items()):
                started = time.perf_counter()
                try:
                    results = workload.run(target, p)
                    target.check_alive()
                except TargetUnavailable as exc:
                    collected.lost[name] = str(exc)
                    del live[name]
                    say(f"[{repeat}/{repeats}] {workload.name} on {name}: {exc}; dropped")
                    continue
                except (BenchError, OSError) as exc:
                    collected.errors.setdefault(name, {})[workload.name] = str(exc)
                    say(f"[{repeat}/{repeats}] {workload.name} on {name}: FAILED: {exc}")
                    if target.process.poll() is not None:
                        collected.lost[name] = f"exited: {target.log_tail()}"
                        del live[name]
                    continue
                finally:
                    target.quiet()
                collected.add(name, results)
                say(f"[{repeat}/{repeats}] {workload.name} on {name}: {describe(results)} "
                    f"({time.perf_counter() - started:.1f} s)")
    return collected


# ------------------------------------------------------------- summary


@dataclass
class Row:
    key: str
    name: str
    unit: str
    lower_is_better: bool
    values: dict[str, list[float]]

    #: How the repeats make one figure: "median", or "max" for growth
    #: figures that only the first repeat sees in full (memory freed by one
    #: repeat is reused by the next).
    aggregate: str = "median"

    def summary(self, target: str) -> float | None:
        values = self.values.get(target)
        if not values:
            return None
        return max(values) if self.aggregate == "max" else statistics.median(values)

    def ratio(self, target: str, reference: str = REFERENCE) -> float | None:
        mine, theirs = self.summary(target), self.summary(reference)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs


def summarise(collected: Collected, names: Sequence[str]) -> list[Row]:
    rows = []
    for key in collected.order:
        first = next(
            collected.results[t][key][0] for t in names
            if key in collected.results.get(t, {})
        )
        values = {
            t: [r.figure for r in collected.results[t][key]]
            for t in names if key in collected.results.get(t, {})
        }
        rows.append(Row(key, first.name, first.unit, first.lower_is_better, values,
                        first.aggregate))
    return _with_xstest_mean(rows, names)


def _with_xstest_mean(rows: list[Row], names: Sequence[str]) -> list[Row]:
    """A row for test-xenstore as a whole: per daemon, the geometric mean of
    the tests' median times, over the tests every daemon passed. Its ratio
    to C is the geometric mean of the tests' ratios."""
    tests = [r for r in rows if r.key.startswith("xstest.")]
    if not tests:
        return rows
    have = [t for t in names if any(t in r.values for r in tests)]
    common = [r for r in tests if all(t in r.values for t in have)]
    mean = Row(
        "xstest.geomean",
        f"test-xenstore per iteration, geometric mean of {len(common)} tests",
        "us",
        True,
        {t: [xstest.geometric_mean([r.summary(t) or 0.0 for r in common])] for t in have},
    )
    index = rows.index(tests[0])
    return [*rows[:index], mean, *rows[index:]]


# ------------------------------------------------------------- targets


@dataclass
class Check:
    title: str
    verdict: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"


def _find(rows: list[Row], key: str) -> Row | None:
    return next((r for r in rows if r.key == key), None)


def _ratio_check(rows: list[Row], title: str, key: str, bound: float, at_least: bool,
                 subject: str, reference: str = REFERENCE) -> Check:
    row = _find(rows, key)
    ratio = row.ratio(subject, reference) if row is not None else None
    if ratio is None:
        return Check(title, "-", "not measured")
    ok = ratio >= bound if at_least else ratio <= bound
    return Check(title, "PASS" if ok else "FAIL", f"{ratio:.2f}x {reference}")


def evaluate(rows: list[Row], p: Params, subject: str = "pyxenstored") -> list[Check]:
    """The issue's targets for ``subject``, from the measured medians."""
    checks = [
        _ratio_check(rows, "pipelined writes >= 1.0x C", "pipe-write", 1.0, True, subject),
        _ratio_check(rows, "pipelined reads >= 1.0x C", "pipe-read", 1.0, True, subject),
        _ratio_check(rows, "test-xenstore time per iteration <= 1.25x C (geometric mean)",
                     "xstest.geomean", 1.25, False, subject),
    ]
    for n in p.watchers:
        checks.append(_ratio_check(rows, f"watch fan-out, {n} watchers >= 1.0x C",
                                   f"fanout-{n}", 1.0, True, subject))
    n = max(p.storm_vms)
    title = f"boot storm, {n} VMs: time <= 0.5x oxenstored, EAGAIN <= oxenstored's"
    seconds, eagain = _find(rows, f"storm-{n}.seconds"), _find(rows, f"storm-{n}.eagain")
    ratio = seconds.ratio(subject, "ocaml") if seconds is not None else None
    mine = eagain.summary(subject) if eagain is not None else None
    theirs = eagain.summary("ocaml") if eagain is not None else None
    if ratio is None or mine is None or theirs is None:
        checks.append(Check(title, "-", "not measured"))
    else:
        ok = ratio <= 0.5 and mine <= theirs
        checks.append(Check(title, "PASS" if ok else "FAIL",
                            f"{ratio:.2f}x ocaml, EAGAIN {mine:,.0f} vs {theirs:,.0f}"))
    checks.append(_ratio_check(rows, f"RSS with {p.nodes:,} nodes <= 2x C",
                               f"big-{p.nodes}.rss", 2.0, False, subject))
    return checks


# ------------------------------------------------------------- output


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if magnitude >= 0.1 else f"{value:.3f}"


def format_report(
    rows: list[Row], checks: list[Check], names: Sequence[str], collected: Collected,
    unavailable: dict[str, str], repeats: int, subject: str = "pyxenstored",
) -> str:
    shown = [t for t in names if any(t in r.values for r in rows)]
    # Ratio columns only when there is a C figure to divide by.
    others = [t for t in shown if t != REFERENCE] if REFERENCE in shown else []
    label = max([len(r.name) for r in rows] + [8]) + 2
    unit = max([len(r.unit) for r in rows] + [4]) + 2
    widths = {t: max(12, len(t) + 2) for t in shown}
    header = "workload".ljust(label) + "unit".ljust(unit) + "better".ljust(8)
    header += "".join(t.rjust(widths[t]) for t in shown)
    header += "".join(f"{t} x C".rjust(max(10, len(t) + 6)) for t in others)
    lines = [f"medians of {repeats} repeat(s) (rows marked 'max': the largest); "
             "'x C' = figure / C xenstored's figure", "",
             header, "-" * len(header)]
    for r in rows:
        line = r.name.ljust(label) + r.unit.ljust(unit)
        line += ("lower" if r.lower_is_better else "higher").ljust(8)
        line += "".join(_number(r.summary(t)).rjust(widths[t]) for t in shown)
        for t in others:
            ratio = r.ratio(t)
            line += (f"{ratio:.2f}x" if ratio is not None else "-").rjust(max(10, len(t) + 6))
        lines.append(line)
    lines += ["", f"targets for {subject} (issue #7)"]
    width = max([len(c.title) for c in checks] + [10]) + 2
    for c in checks:
        lines.append(f"  {c.title.ljust(width)}{c.verdict:<6}{c.detail}")
    notes = []
    for target, errors in collected.errors.items():
        for workload, error in errors.items():
            notes.append(f"{target}: {workload} failed: {error}")
    for target, reason in collected.lost.items():
        notes.append(f"{target}: stopped serving during the run: {reason}")
    for target, reason in unavailable.items():
        notes.append(f"{target}: unavailable ({reason})")
    for target, by_key in collected.results.items():
        for key, results in by_key.items():
            lost = sum(int(r.details.get("events_lost", 0)) for r in results)
            if lost:
                notes.append(f"{target}: {key}: {lost:,} watch events never arrived")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def as_json(
    rows: list[Row], checks: list[Check], names: Sequence[str], collected: Collected,
    unavailable: dict[str, str], p: Params, repeats: int,
) -> dict[str, Any]:
    shown = [t for t in names if any(t in r.values for r in rows)]
    details: dict[str, dict[str, list[dict[str, float]]]] = {}
    for target, by_key in collected.results.items():
        for key, results in by_key.items():
            if any(r.details for r in results):
                details.setdefault(key, {})[target] = [r.details for r in results]
    return {
        "reference": REFERENCE,
        "repeats": repeats,
        "parameters": asdict(p),
        "targets": shown,
        "rows": [
            {
                "key": r.key,
                "workload": r.name.strip(),
                "unit": r.unit,
                "lower_is_better": r.lower_is_better,
                "aggregate": r.aggregate,
                "summary": {t: r.summary(t) for t in r.values},
                "values": r.values,
                "x_c": {t: r.ratio(t) for t in r.values if t != REFERENCE},
                **({"details": details[r.key]} if r.key in details else {}),
            }
            for r in rows
        ],
        "checks": [asdict(c) for c in checks],
        "errors": collected.errors,
        "lost": collected.lost,
        "unavailable": unavailable,
    }
