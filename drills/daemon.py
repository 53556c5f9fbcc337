"""pyxenstored as a subprocess under the stand-in: start, SIGKILL, restart.

Every incarnation appends to one log file; ``take_log`` hands out what was
written since the last call, so each check reads a piece once. After a
SIGKILL the dead daemon's event channel ports are released the way Xen
releases a dead process's ports (its ``0-<p>`` socket files and links are
removed; otherwise every incarnation would keep its ports allocated and a
long drill would run out).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE, encode

#: dom0 kernel's own (reserved) port in the stand-in: never released.
DOM0_PORT = 1


class DaemonDied(Exception):
    """The daemon exited (or never answered) when it should be serving."""


class DaemonProcess:
    def __init__(
        self,
        *,
        library: Path,
        fakexen_dir: Path,
        run_dir: Path,
        durability: str,
        python: str = sys.executable,
        cwd: Path | None = None,
    ) -> None:
        self.fakexen_dir = fakexen_dir
        self.run_dir = run_dir
        self.socket_path = run_dir / "socket"
        self.state_dir = run_dir / "state"
        self.log_path = run_dir / "pyxenstored.log"
        self.argv = pyxenstored_argv(self.socket_path, self.state_dir, durability, python)
        self.env = dict(os.environ)
        self.env.update(
            LD_PRELOAD=str(library),
            FAKEXEN_DIR=str(fakexen_dir),
            XENSTORED_RUNDIR=str(run_dir),
            XENSTORED_PATH=str(self.socket_path),
        )
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        #: When the current incarnation was started (time.monotonic()).
        self.started_at = 0.0
        self._log_read = 0
        self._incarnation_log = 0
        #: Starts refused because the socket was still held (see ``wait_ready``).
        self.refusals: list[str] = []
        run_dir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, *, again: bool = False) -> None:
        """Start an incarnation; ``again`` (a retry of a start that failed)
        keeps the recovery clock running from the first attempt."""
        self.incarnation += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== drill: incarnation {self.incarnation} ===\n".encode())
            log.flush()
            self._incarnation_log = log.tell()
            if not again:
                self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=log
            )

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from ``start`` to the first successful reply (a READ of /).

        A start refused because the socket is still held (``a daemon is
        already listening``: what the killed daemon's forked children keep
        open) is retried until ``timeout``; each refusal is noted in
        ``refusals``.
        """
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                output = self.incarnation_log()
                if "already listening" not in output:
                    self.check_alive()
                line = next(
                    (ln for ln in output.splitlines() if "already listening" in ln), output
                )
                self.refusals.append(line.strip())
                await trio.sleep(0.05)
                self.start(again=True)
                continue
            with trio.move_on_after(1.0):
                if await self._answers():
                    return time.monotonic() - self.started_at
            await trio.sleep(0.005)
        raise DaemonDied(f"no reply within {timeout:g} s of starting\n{self.log_tail()}")

    async def _answers(self) -> bool:
        """One READ of / over a fresh connection; False unless it succeeds.

        Raw, not the client: the socket path may still belong to a process
        that accepts into its backlog and never answers (then resets)."""
        try:
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                await sock.connect(str(self.socket_path))
                await sock.send(encode(Op.READ, 1, 0, b"/\0"))
                head = b""
                while len(head) < HEADER_SIZE:
                    chunk = await sock.recv(HEADER_SIZE - len(head))
                    if not chunk:
                        return False
                    head += chunk
        except OSError:
            return False  # not listening yet (the old socket file refuses), or reset
        return HEADER.unpack(head)[0] == Op.READ

    def incarnation_log(self) -> str:
        """What the current incarnation has logged so far."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._incarnation_log)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            status = None if self.proc is None else self.proc.returncode
            raise DaemonDied(f"pyxenstored exited (status {status})\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, reap, and release the dead process's event channels."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.release_ports()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL if it lingers); returns the exit status."""
        if self.proc is None:
            return None
        return terminate(self.proc, timeout)

    def release_ports(self) -> None:
        """What Xen does when a process holding event channels dies: its
        ports are closed. In the stand-in they are ``evtchn/0-<p>.sock``
        files (and links to them); the guests' ends stay, and the next
        daemon binds to them afresh."""
        for path in (self.fakexen_dir / "evtchn").glob("0-*"):
            port = path.name[2:].split(".")[0]
            if port.isdigit() and int(port) != DOM0_PORT:
                _unlink(path)
        for path in (self.fakexen_dir / "virq").glob("*/0-*.sock"):
            _unlink(path)

    def take_log(self) -> str:
        """The log written since the previous call."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_read)
                data = log.read()
        except FileNotFoundError:
            return ""
        self._log_read += len(data)
        return data.decode(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text[-chars:]


def pyxenstored_argv(
    socket_path: str | Path,
    state_dir: str | Path,
    durability: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs this checkout's daemon in the foreground,
    shared by the drills and the benchmarks."""
    argv = [python, "-m", "pyxenstored", "--no-fork", "--socket", str(socket_path),
            "--state-dir", str(state_dir)]
    if durability is not None:
        argv += ["--durability", durability]
    return argv


def terminate(
    proc: subprocess.Popen[bytes], timeout: float, kill: Callable[[], None] | None = None
) -> int:
    """SIGTERM, and if it lingers past ``timeout`` ``kill`` (default: SIGKILL
    the process and reap it); returns the exit status. Shared with ``bench``,
    whose daemons stop the same way (``bench.persist`` kills a whole session)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if kill is None:
                proc.kill()
                proc.wait()
            else:
                kill()
    return proc.returncode


def log_problems(text: str) -> list[str]:
    """What a daemon's log shows went wrong, one finding each: a traceback
    (its first 2,000 characters), and each problem ``CONTROL check`` found."""
    problems = []
    if "Traceback" in text:
        start = text.index("Traceback")
        problems.append("the daemon logged a traceback:\n" + text[start : start + 2000])
    for line in text.splitlines():
        if "check:" in line:
            problems.append(f"CONTROL check found a problem: {line.strip()}")
    return problems


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
