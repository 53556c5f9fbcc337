"""The daemon as a process: signals, pid file, detaching, state dir, bounded memory."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE, encode

STARTUP_TIMEOUT = 20.0


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyxenstored", *args]


def _env(sdir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("XENSTORED_PATH", None)
    env["XENSTORED_RUNDIR"] = os.path.join(sdir, "run")
    return env


def _wait_for(predicate, timeout: float = STARTUP_TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def _connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _request(path: str, op: int, payload: bytes) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(encode(op, 1, 0, payload))
        type_, _req, _tx, length = HEADER.unpack(_recv_exact(sock, HEADER_SIZE))
        return type_, _recv_exact(sock, length)


@contextmanager
def _foreground(sdir: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``pyxenstored -N`` on ``<sdir>/sock``, stopped (SIGKILL) if still running at the end."""
    sock = os.path.join(sdir, "sock")
    proc = subprocess.Popen(
        _command("-N", "--socket", sock, "--state-dir", os.path.join(sdir, "state"), *extra),
        env=_env(sdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: _connectable(sock) or proc.poll() is not None)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(sdir: str, signum: int) -> None:
    sock = os.path.join(sdir, "sock")
    pid_file = os.path.join(sdir, "pid")
    with _foreground(sdir, "-F", pid_file) as proc:
        assert _request(sock, Op.WRITE, b"/a\0b") == (Op.WRITE, b"OK\0")
        with open(pid_file) as file:
            assert int(file.read()) == proc.pid
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(sock)
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
        idle.settimeout(5)
        assert idle.recv(16) == b""  # connections were closed
        idle.close()
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
    assert f"listening on {sock}" in log
    assert f"{signal.Signals(signum).name} received, shutting down" in log
    assert not os.path.exists(sock)
    assert not os.path.exists(pid_file)


def test_state_dir_created_0700(sdir: str) -> None:
    state = os.path.join(sdir, "state")
    with _foreground(sdir) as proc:
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(sdir, "sock")).st_mode) == 0o600
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_verbose_logs_connections(sdir: str) -> None:
    sock = os.path.join(sdir, "sock")
    with _foreground(sdir, "-V") as proc:
        _request(sock, Op.READ, b"/tool\0")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
    assert "conn 1: opened" in log and "conn 1: closed" in log


def test_sighup_reopens_trace(sdir: str) -> None:
    sock = os.path.join(sdir, "sock")
    trace = os.path.join(sdir, "trace")
    with _foreground(sdir, "-T", trace) as proc:
        _request(sock, Op.READ, b"/tool\0")
        os.rename(trace, trace + ".old")
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: os.path.exists(trace))
        _request(sock, Op.READ, b"/tool/xenstored\0")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    with open(trace) as file:
        text = file.read()
    assert 'READ req 1 tx 0 "/tool/xenstored\\0"' in text
    assert '"/tool\\0"' not in text
    with open(trace + ".old") as file:
        assert 'READ req 1 tx 0 "/tool\\0"' in file.read()


def test_bind_failure_is_fatal(sdir: str) -> None:
    sock = os.path.join(sdir, "missing-dir", "sock")
    result = subprocess.run(
        _command("-N", "--socket", sock, "--state-dir", os.path.join(sdir, "state")),
        env=_env(sdir),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"No such file or directory" in result.stderr


def test_bad_option_value_is_fatal() -> None:
    result = subprocess.run(_command("-W", "many"), capture_output=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == b'FATAL: invalid parameter value "many"\n'


def test_detaches_and_writes_pid_file(sdir: str) -> None:
    sock = os.path.join(sdir, "sock")
    pid_file = os.path.join(sdir, "pid")
    result = subprocess.run(
        _command("--socket", sock, "--state-dir", os.path.join(sdir, "st"), "-F", pid_file),
        env=_env(sdir),
        capture_output=True,
        timeout=30,
    )
    # The starting process returns once the daemon listens.
    assert result.returncode == 0, result.stderr
    with open(pid_file) as file:
        pid = int(file.read())
    try:
        assert _request(sock, Op.READ, b"/tool\0") == (Op.READ, b"")
        assert os.getsid(pid) != os.getsid(0)  # its own session, as C's setsid
        assert os.getsid(pid) != pid  # and not its leader (the second fork)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
        # A second daemon with the same pid file exits silently with 0 (as C).
        again = subprocess.run(
            _command(
                "--socket", sock + "2", "--state-dir", os.path.join(sdir, "st"), "-F", pid_file
            ),
            env=_env(sdir),
            capture_output=True,
            timeout=30,
        )
        assert again.returncode == 0
        assert not os.path.exists(sock + "2")
        assert _request(sock, Op.READ, b"/tool\0") == (Op.READ, b"")
    finally:
        os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: not os.path.exists(pid_file), timeout=10)
    assert not os.path.exists(sock)


def test_detached_start_failure_reports_1(sdir: str) -> None:
    result = subprocess.run(
        _command(
            "--socket",
            os.path.join(sdir, "nodir", "sock"),
            "--state-dir",
            os.path.join(sdir, "st"),
        ),  # fmt: skip
        env=_env(sdir),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1


def test_notify_socket_gets_ready(sdir: str) -> None:
    notify_path = os.path.join(sdir, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(STARTUP_TIMEOUT)
        env = _env(sdir)
        env["NOTIFY_SOCKET"] = notify_path
        sock = os.path.join(sdir, "sock")
        proc = subprocess.Popen(
            _command("-N", "--socket", sock, "--state-dir", os.path.join(sdir, "st")),
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert notify.recv(100) == b"READY=1"
            assert _connectable(sock)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_stays_bounded_with_a_non_reading_client(sdir: str) -> None:
    """10,000 pipelined 4 KiB reads never read back: ~40 MiB of replies never pile up."""
    sock = os.path.join(sdir, "sock")
    with _foreground(sdir) as proc:
        assert _request(sock, Op.WRITE, b"/big\0" + b"x" * 4000) == (Op.WRITE, b"OK\0")
        baseline = _rss_kib(proc.pid)
        flooder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        flooder.connect(sock)
        sent = [0]

        def flood() -> None:
            """One write per request, as libxenstore pipelines them."""
            try:
                for i in range(10_000):
                    flooder.sendall(encode(Op.READ, i, 0, b"/big\0"))
                    sent[0] = i + 1
            except OSError:
                pass

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        # Let the daemon stall: the flooder's send blocks once buffers fill.
        _wait_for(lambda: not thread.is_alive() or _stalled(sent), timeout=30)
        assert thread.is_alive(), "the daemon swallowed every request without backpressure"
        grown = _rss_kib(proc.pid) - baseline
        # Another client is served meanwhile.
        for i in range(20):
            assert _request(sock, Op.WRITE, f"/o/{i}\0v".encode()) == (Op.WRITE, b"OK\0")
        assert grown < 16 * 1024, f"daemon grew by {grown} KiB"
        flooder.shutdown(socket.SHUT_RDWR)  # wakes the blocked sendall
        thread.join(timeout=10)
        assert not thread.is_alive()
        flooder.close()
        assert _request(sock, Op.READ, b"/o/3\0") == (Op.READ, b"v")
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def _stalled(sent: list[int]) -> bool:
    before = sent[0]
    time.sleep(0.5)
    return sent[0] == before


def test_socket_in_rundir_from_environment(sdir: str) -> None:
    """No --socket: $XENSTORED_RUNDIR/socket, the run dir created (0755) as C does."""
    run_dir = os.path.join(sdir, "run")
    sock = os.path.join(run_dir, "socket")
    proc = subprocess.Popen(
        _command("-N", "--state-dir", os.path.join(sdir, "st")),
        env=_env(sdir),
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _connectable(sock) or proc.poll() is not None)
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o755
        assert _request(sock, Op.READ, b"/tool\0") == (Op.READ, b"")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
