"""Benchmark targets: how to start a xenstore daemon and where its socket is.

A ``Target`` is data: a name, a function building the command line and
environment for a given scratch directory, and where the socket will be.
``launch`` starts one in a fresh temporary directory, waits until its
socket accepts connections, and stops it (SIGTERM, then SIGKILL) on exit.

Only pyxenstored runs everywhere. The C and OCaml daemons are declared
here too, but they open the hypervisor at start-up, so on a host without
Xen they exit at once and are reported as unavailable (with their own
error message); once the project's stand-in hypervisor can host them,
only their ``command`` needs changing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from drills.daemon import pyxenstored_argv
from pyxenstored.server.listener import socket_accepts

#: Seconds a daemon has to start accepting connections.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

XEN_BIN = "/usr/lib/xen-4.17/bin"


class TargetUnavailable(Exception):
    """The daemon could not be started here; the message says why."""


@dataclass(frozen=True)
class Launch:
    """What a target needs to run in one scratch directory."""

    argv: list[str]
    env: dict[str, str]
    socket_path: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    #: Build the command line for a scratch directory.
    prepare: Callable[[str], Launch]
    #: A quick local reason why it cannot run (missing binary), or None.
    missing: Callable[[], str | None] = lambda: None


def _pyxenstored(directory: str) -> Launch:
    sock = os.path.join(directory, "socket")
    argv = pyxenstored_argv(sock, os.path.join(directory, "state"))
    return Launch(argv, dict(os.environ), sock)


def _c_xenstored(directory: str) -> Launch:
    # C xenstored puts its socket in $XENSTORED_RUNDIR (XEN_RUN_STORED).
    env = dict(os.environ, XENSTORED_RUNDIR=directory, XEN_RUN_STORED=directory)
    argv = [os.path.join(XEN_BIN, "xenstored"), "--no-fork"]
    return Launch(argv, env, os.path.join(directory, "socket"))


def _oxenstored(directory: str) -> Launch:
    env = dict(os.environ, XENSTORED_RUNDIR=directory, XEN_RUN_STORED=directory)
    argv = [os.path.join(XEN_BIN, "oxenstored"), "--no-fork"]
    return Launch(argv, env, os.path.join(directory, "socket"))


def _binary_missing(path: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if os.access(path, os.X_OK) else f"{path} not found"

    return check


TARGETS: dict[str, Target] = {
    "pyxenstored": Target("pyxenstored", "this project (python -m pyxenstored)", _pyxenstored),
    "c": Target(
        "c",
        "C xenstored (needs a hypervisor or the stand-in)",
        _c_xenstored,
        _binary_missing(os.path.join(XEN_BIN, "xenstored")),
    ),
    "ocaml": Target(
        "ocaml",
        "oxenstored (needs a hypervisor or the stand-in)",
        _oxenstored,
        _binary_missing(os.path.join(XEN_BIN, "oxenstored")),
    ),
}




def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Running:
    target: Target
    socket_path: str
    pid: int


@contextmanager
def launch(target: Target) -> Iterator[Running]:
    """Run ``target`` in a scratch directory for the duration of the block."""
    reason = target.missing()
    if reason is not None:
        raise TargetUnavailable(reason)
    directory = tempfile.mkdtemp(prefix=f"xsbench-{target.name}-", dir="/tmp")
    log_path = os.path.join(directory, "daemon.log")
    try:
        spec = target.prepare(directory)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                spec.argv,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not (os.path.exists(spec.socket_path) and socket_accepts(spec.socket_path)):
                if process.poll() is not None or time.monotonic() > deadline:
                    with open(log_path, encoding="utf-8", errors="replace") as file:
                        text = file.read().strip()
                    last = text.splitlines()[-1] if text else "no output"
                    raise TargetUnavailable(f"did not start (status {process.poll()}): {last}")
                time.sleep(0.05)
            yield Running(target, spec.socket_path, process.pid)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
