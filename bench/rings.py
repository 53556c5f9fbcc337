"""Idle guests on rings: how much CPU does a daemon burn doing nothing?

Issue #3: "an idle daemon with 100 idle guests stays under 1% CPU". This
runs each daemon on the project's stand-in hypervisor (``tests/fakexen``,
see docs/testing.md), introduces N simulated guests (``RingGuest``: a
shared-memory ring page and a datagram-socket event channel each), lets
every guest do what a booting guest's xenbus does (a write, a read, a watch
on its ``device`` directory), and then leaves them all idle, connected, with
their watches in place. Over the idle window it reads the daemon's CPU time
(``utime + stime`` of every thread, ``/proc/<pid>/stat``) and context
switches (``/proc/<pid>/task/*/status``) before and after, and reports the
CPU used as a percentage of one core.

The guests run in this process, in one trio loop; their clients wait on
the event channel alone (no polling), so an idle guest costs nothing here
and whatever the daemon does during the window is its own doing.

    .venv/bin/python -m bench --idle-guests 100 --idle-seconds 10
    .venv/bin/python -m bench --idle-guests 100 --targets pyxenstored,c,ocaml
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from pyxenstored.client import Client, open_client

REPO = Path(__file__).resolve().parents[1]
FAKEXEN = REPO / "tests" / "fakexen"

#: Which daemons this benchmark can run, by bench target name.
RING_TARGETS = ("pyxenstored", "c", "ocaml")
#: The issue's bound for an idle daemon.
DEFAULT_MAX_PERCENT = 1.0


class RingsUnavailable(Exception):
    """The stand-in or the daemon cannot run here; the message says why."""


def _fakexen() -> Any:
    """Import the stand-in's test helpers (they live with the tests)."""
    if str(FAKEXEN) not in sys.path:
        sys.path.insert(0, str(FAKEXEN))
    # Imported by name: they are test code, outside the package (and mypy's view).
    return importlib.import_module("fakexen_support"), importlib.import_module("ring_guest")


@dataclass
class CpuSample:
    """A daemon's accumulated CPU time and context switches at one instant."""

    at: float
    cpu_seconds: float
    #: Time on a CPU of the live threads (``/proc/<pid>/task/*/schedstat``, ns).
    run_ns: int
    voluntary_switches: int
    involuntary_switches: int


def sample(pid: int) -> CpuSample:
    """Read ``/proc/<pid>/stat`` (utime, stime: fields 14, 15; clock ticks),
    and every thread's run time in ns (``schedstat``) and context switches."""
    at = time.monotonic()
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15, 1-based
    voluntary = involuntary = run_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                run_ns += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
        except FileNotFoundError:
            pass  # the thread exited meanwhile
    return CpuSample(at, ticks / os.sysconf("SC_CLK_TCK"), run_ns, voluntary, involuntary)


@dataclass
class IdleResult:
    target: str
    guests: int
    seconds: float
    cpu_seconds: float
    run_seconds: float
    wakeups: int
    involuntary: int
    setup_seconds: float

    @property
    def percent(self) -> float:
        """CPU used over the window (utime + stime), in percent of one core."""
        return 100.0 * self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def run_percent(self) -> float:
        """The same from the threads' schedstat run time (ns resolution)."""
        return 100.0 * self.run_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def wakeups_per_second(self) -> float:
        return self.wakeups / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def _daemon(target: str, scratch: Path) -> Iterator[tuple[Any, Any]]:
    """Lay out a stand-in under ``scratch`` and run ``target`` on it."""
    support, _ = _fakexen()
    starters: dict[str, tuple[Callable[..., Any], Path | None]] = {
        "pyxenstored": (support.start_pyxenstored, None),
        "c": (support.start_c_xenstored, support.C_XENSTORED),
        "ocaml": (support.start_oxenstored, support.OXENSTORED),
    }
    start, binary = starters[target]
    if binary is not None and not binary.exists():
        raise RingsUnavailable(f"{binary} not found (Debian package xen-utils-4.17)")
    fx = support.FakeXen(scratch / "fx")
    try:
        daemon = start(fx, scratch / "run")
    except RuntimeError as exc:
        raise RingsUnavailable(str(exc).splitlines()[0]) from exc
    try:
        yield fx, daemon
    finally:
        daemon.stop()


async def _idle_guest(
    domid: int,
    guest: Any,
    ready: trio.MemorySendChannel[int],
    done: trio.Event,
) -> None:
    async with guest.client(poll_interval=None) as client:
        client_: Client = client
        # What a guest's xenbus does when it comes up.
        await client_.write("name", f"guest{domid}")
        if await client_.read("name") != f"guest{domid}".encode():
            raise AssertionError(f"guest {domid} read back the wrong name")
        async with client_.watch("device", token=f"dev{domid}") as events:
            await events.receive()  # the immediate event
            await ready.send(domid)
            await done.wait()  # idle: nothing to do, nothing polled


async def _measure(
    target: str, daemon: Any, fx: Any, guests: int, idle: float, settle: float
) -> IdleResult:
    _, ring_guest = _fakexen()
    started = time.monotonic()
    made: list[Any] = []
    try:
        async with open_client(daemon.socket_path) as dom0:
            for domid in range(1, guests + 1):
                fx.set_domain(domid, "running")
                guest = ring_guest.RingGuest(fx.root, domid)
                made.append(guest)
                home = f"/local/domain/{domid}"
                await dom0.mkdir(home)
                await dom0.set_perms(home, [f"n{domid}"])
                await dom0.introduce(domid, 0xFEFFF, guest.port)
            done = trio.Event()
            send, receive = trio.open_memory_channel[int](guests)
            async with trio.open_nursery() as nursery:
                for domid, guest in enumerate(made, start=1):
                    nursery.start_soon(_idle_guest, domid, guest, send, done)
                with trio.fail_after(60):
                    for _ in range(guests):
                        await receive.receive()
                setup = time.monotonic() - started
                await trio.sleep(settle)  # let start-up work (GC, journal) finish
                before = sample(daemon.proc.pid)
                await trio.sleep(idle)
                after = sample(daemon.proc.pid)
                done.set()
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"{target} exited during the idle window")
            # Still serving: every guest is still introduced.
            for domid in range(1, guests + 1):
                if not await dom0.is_domain_introduced(domid):
                    raise RuntimeError(f"{target} forgot domain {domid}")
    finally:
        for guest in made:
            guest.close()
    return IdleResult(
        target=target,
        guests=guests,
        seconds=after.at - before.at,
        cpu_seconds=after.cpu_seconds - before.cpu_seconds,
        run_seconds=(after.run_ns - before.run_ns) / 1e9,
        wakeups=after.voluntary_switches - before.voluntary_switches,
        involuntary=after.involuntary_switches - before.involuntary_switches,
        setup_seconds=setup,
    )


def build() -> None:
    """Build libfakexen.so (a no-op when up to date), or say why not."""
    if not Path("/usr/include/xenevtchn.h").exists():
        raise RingsUnavailable("libxen-dev headers (xenevtchn.h) are not installed")
    support, _ = _fakexen()
    try:
        support.build_library()
    except Exception as exc:  # missing gcc/make, or the build failed
        raise RingsUnavailable(f"cannot build libfakexen.so: {exc}") from exc


def idle_guests(
    targets: list[str], guests: int, idle: float, settle: float = 1.0
) -> tuple[list[IdleResult], dict[str, str]]:
    """Run the idle measurement for each target in turn, each on its own
    fresh stand-in; returns the results and the unavailable targets."""
    results: list[IdleResult] = []
    unavailable: dict[str, str] = {}
    try:
        build()
    except RingsUnavailable as exc:
        return results, dict.fromkeys(targets, str(exc))
    for target in targets:
        if target not in RING_TARGETS:
            unavailable[target] = "not runnable on the stand-in"
            continue
        print(f"# {target}: {guests} guests, {idle:g} s idle", file=sys.stderr, flush=True)
        # Short: Unix socket paths under it must stay below 108 bytes.
        scratch = Path(tempfile.mkdtemp(prefix=f"xsidle-{target}-", dir="/tmp"))
        try:
            with _daemon(target, scratch) as (fx, daemon):
                results.append(trio.run(_measure, target, daemon, fx, guests, idle, settle))
        except RingsUnavailable as exc:
            unavailable[target] = str(exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return results, unavailable


def format_idle_table(
    results: list[IdleResult], unavailable: dict[str, str], max_percent: float
) -> str:
    header = (
        f"{'daemon':<12}{'guests':>7}{'idle s':>8}{'utime+stime':>13}{'% of 1 core':>13}"
        f"{'run (ns)':>11}{'% of 1 core':>13}{'wakeups/s':>11}{'setup s':>9}"
        f"  < {max_percent:g}%"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        verdict = "yes" if r.percent < max_percent else "NO"
        lines.append(
            f"{r.target:<12}{r.guests:>7}{r.seconds:>8.2f}{r.cpu_seconds:>12.2f}s"
            f"{r.percent:>12.2f}%{r.run_seconds * 1e3:>9.1f}ms{r.run_percent:>12.3f}%"
            f"{r.wakeups_per_second:>11.1f}{r.setup_seconds:>9.2f}  {verdict}"
        )
    if len(results) > 1:
        lines.append("")
        first = results[0]
        for r in results[1:]:
            if r.run_seconds > 0:
                ratio = f"{first.run_seconds / r.run_seconds:.1f}x"
            else:
                ratio = f"- ({r.target} did not run at all in the window)"
            lines.append(
                f"CPU ratio {first.target}/{r.target} (schedstat run time): {ratio}; "
                f"{first.run_seconds * 1e3:.1f} ms vs {r.run_seconds * 1e3:.1f} ms"
            )
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    lines.append(
        f"(utime+stime from /proc/<pid>/stat, resolution {tick * 1000:.0f} ms; run = "
        "sum of /proc/<pid>/task/*/schedstat; wakeups = voluntary context switches)"
    )
    for name, reason in unavailable.items():
        lines.append(f"{name}: unavailable ({reason})")
    return "\n".join(lines)


def as_json(results: list[IdleResult], unavailable: dict[str, str]) -> dict[str, Any]:
    return {
        "results": {
            r.target: {
                "guests": r.guests,
                "seconds": r.seconds,
                "cpu_seconds": r.cpu_seconds,
                "percent_of_one_core": r.percent,
                "run_seconds_schedstat": r.run_seconds,
                "run_percent_schedstat": r.run_percent,
                "wakeups": r.wakeups,
                "involuntary_switches": r.involuntary,
                "setup_seconds": r.setup_seconds,
            }
            for r in results
        },
        "unavailable": unavailable,
    }
