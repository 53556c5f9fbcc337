"""Benchmark targets: the three daemons, each on its own stand-in and socket.

A ``Target`` is data: a name, a description, how to build its command line
in a scratch directory, and what it needs. ``launch`` starts one and waits
until its socket accepts connections; ``launch_all`` starts several, all
kept running for the whole run, and stops them (SIGTERM, then SIGKILL) at
the end.

Every daemon runs on the project's stand-in hypervisor (``bench/standin.py``:
``libfakexen.so`` preloaded, its own ``$FAKEXEN_DIR``), in its normal
configuration and without tracing or access logs:

* ``pyxenstored``: ``drills.daemon.pyxenstored_argv`` (its default
  durability, ``write``: every change journaled before it is answered);
* ``c``: Debian's ``xenstored --no-fork`` (no ``--trace-file``), socket in
  ``$XENSTORED_RUNDIR``;
* ``ocaml``: Debian's ``oxenstored --no-fork`` with a private config file
  (as ``fakexen_support.start_oxenstored``) whose access log is off
  (``access-log-nb-files = 0``: no logger is created at all).

Without the stand-in (no gcc or libxen-dev headers) pyxenstored still runs,
serving its socket alone; the C and OCaml daemons are then unavailable.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.standin import StandIn, Unavailable, open_standin
from drills.daemon import pyxenstored_argv, terminate
from pyxenstored.server.listener import socket_accepts

#: Seconds a daemon has to start accepting connections.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[1]
XEN_BIN = "/usr/lib/xen-4.17/bin"
C_XENSTORED = os.path.join(XEN_BIN, "xenstored")
OXENSTORED = os.path.join(XEN_BIN, "oxenstored")


class TargetUnavailable(Exception):
    """The daemon could not be started here; the message says why."""


@dataclass(frozen=True)
class Launch:
    """What a target needs to run in one scratch directory."""

    argv: list[str]
    socket_path: str
    #: pyxenstored's journal directory (None for the others).
    state_dir: str | None = None


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    #: Build the command line for a run directory.
    prepare: Callable[[Path], Launch]
    #: A quick local reason why it cannot run (missing binary), or None.
    missing: Callable[[], str | None] = lambda: None
    #: Only on the stand-in (it opens the hypervisor at start-up).
    needs_hypervisor: bool = True


def _die_with_parent() -> None:
    """In the daemon's child before exec: SIGTERM when the bench process dies
    (prctl PR_SET_PDEATHSIG), so that a killed run leaves no daemon behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _pyxenstored(run: Path) -> Launch:
    sock = run / "socket"
    state = run / "state"
    return Launch(pyxenstored_argv(sock, state), str(sock), str(state))


def _c_xenstored(run: Path) -> Launch:
    # The socket goes to $XENSTORED_RUNDIR; no --trace-file.
    return Launch([C_XENSTORED, "--no-fork"], str(run / "socket"))


def oxenstored_config(run: Path) -> str:
    """oxenstored's private config: no persistence, no access log."""
    return (
        f"pid-file = {run}/xenstored.pid\n"
        "persistent = false\n"
        f"xenstored-log-file = {run}/xenstored.log\n"
        # No access logger at all (Logging.init_access_log needs nb-files > 0).
        "access-log-nb-files = 0\n"
        "access-log-file = /dev/null\n"
        "access-log-read-ops = false\n"
        "access-log-transactions-ops = false\n"
        "access-log-special-ops = false\n"
        "xenstored-kva = /proc/xen/xsd_kva\n"
        "xenstored-port = /proc/xen/xsd_port\n"
    )


def _oxenstored(run: Path) -> Launch:
    conf = run / "oxenstored.conf"
    conf.write_text(oxenstored_config(run))
    # Its compiled-in /var/run/xenstored is redirected to $XENSTORED_RUNDIR
    # by the stand-in.
    return Launch([OXENSTORED, "--no-fork", "--config-file", str(conf)], str(run / "socket"))


def _binary_missing(path: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if os.access(path, os.X_OK):
            return None
        return f"{path} not found (Debian's xen-utils-4.17: make debs)"

    return check


TARGETS: dict[str, Target] = {
    "pyxenstored": Target(
        "pyxenstored", "this project (python -m pyxenstored)", _pyxenstored,
        needs_hypervisor=False,
    ),
    "c": Target("c", "C xenstored 4.17 (Debian)", _c_xenstored, _binary_missing(C_XENSTORED)),
    "ocaml": Target("ocaml", "oxenstored 4.17 (Debian)", _oxenstored, _binary_missing(OXENSTORED)),
}


@dataclass
class Running:
    """A started daemon: where to reach it and which process it is."""

    name: str
    socket_path: str
    process: subprocess.Popen[bytes]
    run_dir: Path
    log_path: Path
    state_dir: str | None = None
    #: Its stand-in's ``$FAKEXEN_DIR`` (None without the stand-in).
    fakexen_dir: Path | None = None
    #: Per-daemon state of workloads (a guest on a ring), closed at the end.
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """The daemon's resident memory (VmRSS), in KiB."""
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        """The daemon's CPU time so far, user and system."""
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise TargetUnavailable(
                f"{self.name} exited (status {self.process.returncode}): {self.log_tail()}"
            )

    def quiet(self, timeout: float = 60.0) -> None:
        """Wait until pyxenstored writes no snapshot (a compaction child),
        so that it does not run into the next target's measurement."""
        if self.state_dir is None or not os.path.isdir(self.state_dir):
            return
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 3 and time.monotonic() < deadline:
            busy = any(name.endswith(".tmp") for name in os.listdir(self.state_dir))
            calm = 0 if busy else calm + 1
            time.sleep(0.05)

    def stop(self) -> None:
        for extra in self.extras.values():
            close = getattr(extra, "close", None)
            if close is not None:
                close()
        self.extras.clear()

        def kill() -> None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

        terminate(self.process, STOP_TIMEOUT, kill)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (seconds), from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError as exc:
        raise TargetUnavailable(f"process {pid} is gone") from exc
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` (KiB), from ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TargetUnavailable(f"no VmRSS for process {pid}")


@contextmanager
def launch(
    target: Target, standin: StandIn | None = None, domains: int = 0,
    scratch: Path | None = None,
) -> Iterator[Running]:
    """Run ``target`` (on ``standin`` if given, with domains 1..``domains``
    listed as running) for the duration of the block."""
    reason = target.missing()
    if reason is not None:
        raise TargetUnavailable(reason)
    if standin is None and target.needs_hypervisor:
        raise TargetUnavailable("needs the stand-in hypervisor, which cannot be built here")
    own = scratch is None
    # Short: Unix socket paths under it must stay below 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix=f"xsb-{target.name}-", dir="/tmp")) \
        if scratch is None else scratch
    run = directory / "run"
    run.mkdir(parents=True, exist_ok=True)
    log_path = run / "daemon.log"
    try:
        spec = target.prepare(run)
        fx: Any = None
        if standin is not None:
            try:
                fx = standin.layout(directory / "fx", domains)
            except Unavailable as exc:
                raise TargetUnavailable(str(exc)) from exc
            env = standin.env(fx, run)
        else:
            env = dict(os.environ, XENSTORED_RUNDIR=str(run), XENSTORED_PATH=spec.socket_path)
            env.pop("LD_PRELOAD", None)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                spec.argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        running = Running(target.name, spec.socket_path, process, run, log_path,
                          spec.state_dir, fx.root if standin is not None else None)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not (os.path.exists(spec.socket_path) and socket_accepts(spec.socket_path)):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise TargetUnavailable(
                        f"did not start (status {process.poll()}): "
                        f"{running.log_tail(1) or 'no output'}"
                    )
                time.sleep(0.05)
            yield running
        finally:
            running.stop()
    finally:
        if own:
            shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def launch_all(
    names: list[str], domains: int = 0, say: Callable[[str], None] = lambda _: None,
) -> Iterator[tuple[dict[str, Running], dict[str, str]]]:
    """Start every named target, each on its own stand-in; yields the running
    ones and, for the others, why they are unavailable."""
    unavailable: dict[str, str] = {}
    try:
        standin: StandIn | None = open_standin()
    except Unavailable as exc:
        standin = None
        say(f"stand-in hypervisor unavailable: {exc}")
        unavailable_reason = str(exc)
    running: dict[str, Running] = {}
    with ExitStack() as stack:
        for name in names:
            target = TARGETS[name]
            if standin is None and target.needs_hypervisor:
                unavailable[name] = f"no stand-in hypervisor: {unavailable_reason}"
                continue
            try:
                running[name] = stack.enter_context(launch(target, standin, domains))
                say(f"{name}: {target.description}, pid {running[name].pid}, "
                    f"socket {running[name].socket_path}")
            except TargetUnavailable as exc:
                unavailable[name] = str(exc)
                say(f"{name}: unavailable ({exc})")
        yield running, unavailable
