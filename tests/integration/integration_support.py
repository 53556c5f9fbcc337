"""Helpers shared by the integration tests: a real daemon in a subprocess,
and a blocking raw-socket xenstore connection for byte-exact requests.

The daemon runs as ``python -m pyxenstored --no-fork`` on a socket in a
fresh temporary directory. ``start_daemon`` waits until the socket accepts
connections; ``Daemon.stop`` sends SIGTERM and reports how it exited.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyxenstored.server.listener import socket_accepts

HEADER = struct.Struct("=IIII")
ERROR = 16
WATCH_EVENT = 15

#: Seconds a starting daemon has to accept connections.
START_TIMEOUT = 20.0
#: Seconds a SIGTERM-ed daemon has to exit before it is killed.
STOP_TIMEOUT = 10.0
#: Log lines that mean the daemon hit an internal error (never acceptable).
BAD_LOG_MARKERS = ("Traceback", "internal error", "unexpected error")


def vm_rss_kib(pid: int) -> int:
    """``VmRSS`` of a process, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")




@dataclass
class Daemon:
    """A running pyxenstored subprocess."""

    process: subprocess.Popen[bytes]
    directory: str
    socket_path: str
    log_path: str
    returncode: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """The environment for libxenstore-based tools to use this daemon."""
        env = dict(os.environ)
        env["XENSTORED_PATH"] = self.socket_path
        return env

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as file:
                return file.read()
        except OSError:
            return ""

    def stop(self) -> tuple[int, bool]:
        """SIGTERM, wait; kill as a fallback. Returns (exit status, was killed)."""
        if self.process.poll() is not None:
            return self.process.returncode, False
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT), False
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(STOP_TIMEOUT), True


def daemon_command(socket_path: str, state_dir: str, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pyxenstored",
        "--no-fork",
        "--socket",
        socket_path,
        "--state-dir",
        state_dir,
        *extra,
    ]


def start_daemon(extra: Sequence[str] = ()) -> Daemon:
    """Start a daemon on a fresh short socket path; return once it accepts."""
    # /tmp rather than pytest's tmp_path: sun_path holds at most 107 bytes.
    directory = tempfile.mkdtemp(prefix="pyxsd-", dir="/tmp")
    socket_path = os.path.join(directory, "socket")
    log_path = os.path.join(directory, "daemon.log")
    log = open(log_path, "wb")  # handed to the child
    try:
        process = subprocess.Popen(
            daemon_command(socket_path, os.path.join(directory, "state"), extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()
    daemon = Daemon(process, directory, socket_path, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            text = daemon.log()
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"daemon exited with {process.returncode} on start:\n{text}")
        if os.path.exists(socket_path) and socket_accepts(socket_path):
            return daemon
        if time.monotonic() > deadline:
            daemon.stop()
            text = daemon.log()
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"daemon did not accept within {START_TIMEOUT}s:\n{text}")
        time.sleep(0.05)


def finish_daemon(daemon: Daemon) -> str | None:
    """Stop the daemon and clean up; return a failure description, or None."""
    problems = []
    if not daemon.alive():
        problems.append(f"daemon died during the test (status {daemon.process.returncode})")
    status, killed = daemon.stop()
    if killed:
        problems.append("daemon ignored SIGTERM and was killed")
    elif status != 0:
        problems.append(f"daemon exited with status {status} after SIGTERM")
    text = daemon.log()
    bad = [marker for marker in BAD_LOG_MARKERS if marker in text]
    if bad:
        problems.append(f"daemon log contains {bad}")
    if os.path.exists(daemon.socket_path):
        problems.append("socket file left behind after a clean stop")
    shutil.rmtree(daemon.directory, ignore_errors=True)
    if problems:
        return "; ".join(problems) + "\n--- daemon log ---\n" + text[-8000:]
    return None


@contextmanager
def running_daemon(extra: Sequence[str] = ()) -> Iterator[Daemon]:
    daemon = start_daemon(extra)
    try:
        yield daemon
    finally:
        problem = finish_daemon(daemon)
        if problem is not None:
            raise AssertionError(problem)


# -- a blocking raw connection ---------------------------------------------------


class ConnectionClosedError(Exception):
    """The daemon closed the connection."""


class RawConnection:
    """Byte-exact requests over a blocking Unix socket."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buffer = b""
        self._next_req = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, op: int, payload: bytes, req_id: int | None = None, tx_id: int = 0) -> int:
        if req_id is None:
            req_id = self._next_req
            self._next_req += 1
        self.sock.sendall(HEADER.pack(op, req_id, tx_id, len(payload)) + payload)
        return req_id

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, count: int) -> None:
        while len(self._buffer) < count:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as exc:
                raise ConnectionClosedError("connection reset") from exc
            if not chunk:
                raise ConnectionClosedError("EOF")
            self._buffer += chunk

    def receive(self) -> tuple[int, int, int, bytes]:
        """The next message: (type, req_id, tx_id, payload)."""
        self._fill(HEADER.size)
        type_, req_id, tx_id, length = HEADER.unpack_from(self._buffer)
        self._fill(HEADER.size + length)
        payload = self._buffer[HEADER.size : HEADER.size + length]
        self._buffer = self._buffer[HEADER.size + length :]
        return type_, req_id, tx_id, payload

    def receive_reply(self) -> tuple[int, int, int, bytes]:
        """The next message that is not a watch event."""
        while True:
            message = self.receive()
            if message[0] != WATCH_EVENT:
                return message

    def request(self, op: int, payload: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        """Send and wait for the reply; returns (type, payload)."""
        req_id = self.send(op, payload, tx_id=tx_id)
        type_, got_req, _tx, reply = self.receive_reply()
        assert got_req == req_id, f"reply req_id {got_req} != {req_id}"
        return type_, reply

    def expect_error(self, op: int, payload: bytes, tx_id: int = 0) -> str:
        """Send; the reply must be an ERROR; return its name."""
        type_, reply = self.request(op, payload, tx_id)
        assert type_ == ERROR, f"op {op} {payload!r}: expected an error, got {type_} {reply!r}"
        assert reply.endswith(b"\0"), reply
        return reply[:-1].decode("ascii")

    def expect_ok(self, op: int, payload: bytes, tx_id: int = 0) -> bytes:
        type_, reply = self.request(op, payload, tx_id)
        assert type_ == op, f"op {op} {payload!r}: expected success, got {type_} {reply!r}"
        return reply

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True if the daemon closes the connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
