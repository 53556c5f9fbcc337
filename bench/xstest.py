"""Xen's own xenstore micro-benchmark, ``test-xenstore -i N``.

``/usr/lib/xen-4.17/bin/test-xenstore`` (tools/tests/xenstore/test-xenstore.c)
runs a dozen tests through libxenstore (read and write of small and large
nodes, a directory, removals, empty and read-modify-write transactions, a
transaction with a conflict), each ``N`` times, and prints one line per
test with the mean, shortest and longest time of the timed part of an
iteration (the test's own operation, one request for the simple tests,
half a dozen for the transactions), e.g.::

    read 1    : avg: 40268 ns (28823 ns .. 149281 ns)
    ta err    : failed (ret = 61, stage run)

It connects to ``$XENSTORED_PATH`` and runs without the stand-in preloaded
(it is a client, not a daemon: ``control_env`` of ``bench/liveupdate.py``).
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass

from bench.liveupdate import control_env
from bench.workloads import BenchError

TEST_XENSTORE = "/usr/lib/xen-4.17/bin/test-xenstore"
TIMEOUT = 600.0

_AVG = re.compile(
    r"^(?P<name>.*?)\s*: avg: (?P<avg>\d+) ns \((?P<min>\d+) ns \.\. (?P<max>\d+) ns\)"
)
_ONE = re.compile(r"^(?P<name>.*?)\s*: (?P<avg>\d+) ns$")
_FAILED = re.compile(r"^(?P<name>.*?)\s*: failed (?P<why>.*)$")


@dataclass(frozen=True)
class TestTime:
    name: str
    #: Mean, shortest and longest time of one iteration, in nanoseconds.
    avg_ns: int
    min_ns: int
    max_ns: int


@dataclass(frozen=True)
class Output:
    times: list[TestTime]
    failures: dict[str, str]


def parse_output(text: str) -> Output:
    """test-xenstore's lines, in order; failed tests apart."""
    times: list[TestTime] = []
    failures: dict[str, str] = {}
    for line in text.splitlines():
        line = line.rstrip()
        if match := _AVG.match(line):
            times.append(TestTime(match["name"], int(match["avg"]), int(match["min"]),
                                  int(match["max"])))
        elif match := _ONE.match(line):
            avg = int(match["avg"])
            times.append(TestTime(match["name"], avg, avg, avg))
        elif match := _FAILED.match(line):
            failures[match["name"]] = match["why"]
    return Output(times, failures)


def geometric_mean(values: list[float]) -> float:
    if not values or any(v <= 0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def run(socket_path: str, iterations: int, binary: str = TEST_XENSTORE) -> Output:
    """Run every test ``iterations`` times against the daemon at ``socket_path``."""
    done = subprocess.run(
        [binary, "-i", str(iterations)],
        env=control_env(socket_path),
        capture_output=True,
        timeout=TIMEOUT,
    )
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise BenchError(
            f"test-xenstore exited {done.returncode}: "
            f"{(text + done.stderr.decode(errors='replace')).strip()[-300:]}"
        )
    output = parse_output(text)
    if not output.times and not output.failures:
        raise BenchError(f"test-xenstore printed no result: {text.strip()[-300:]!r}")
    return output
