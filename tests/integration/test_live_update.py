"""Live update (issue 6) driven by Xen's own ``xenstore-control``: the daemon
starts a new program beside itself that takes over every connection, watch,
queued event, partial packet and open transaction; the requester's ``OK``
comes from the new instance, the process the supervisor started stays (as
the anchor), and a new program that fails leaves the old one serving."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import (
    HEADER,
    WATCH_EVENT,
    Daemon,
    RawConnection,
    finish_daemon,
    start_daemon,
)

XENSTORE_CONTROL = Path("/usr/lib/xen-4.17/bin/xenstore-control")
READ, WATCH, TX_START, TX_END, WRITE, CONTROL = 2, 4, 6, 7, 11, 0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    if not XENSTORE_CONTROL.exists():
        pytest.skip(f"{XENSTORE_CONTROL} is not installed (xen-utils-4.17)")
    d = start_daemon()
    try:
        yield d
    finally:
        problem = finish_daemon(d)
        assert problem is None, problem


def new_binary(daemon: Daemon) -> str:
    """The "new version": this checkout's pyxenstored behind a wrapper."""
    path = os.path.join(daemon.directory, "pyxenstored-new")
    with open(path, "w") as file:
        file.write(f'#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m pyxenstored "$@"\n')
    os.chmod(path, 0o755)
    return path


def control(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(XENSTORE_CONTROL), *args], env=daemon.env(),
                          capture_output=True, text=True, timeout=60)


def live_update(daemon: Daemon) -> None:
    result = control(daemon, "live-update", new_binary(daemon))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "took over" in wait_for_log(daemon, "took over")


def wait_for_log(daemon: Daemon, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in daemon.log():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.02)
    return daemon.log()


def test_xenstore_control_drives_it(daemon: Daemon) -> None:
    with RawConnection(daemon.socket_path) as c:
        c.expect_ok(WRITE, b"/a/b\0hello")
        live_update(daemon)
        assert c.expect_ok(READ, b"/a/b\0") == b"hello"  # the same connection
    assert daemon.alive()  # the supervised pid: now the anchor
    log = daemon.log()
    assert log.count("listening on") == 2 and "took over 2 connections" in log
    new_pid = int(log.split("new instance (pid ")[1].split(")")[0])
    assert f"pyxenstored[{new_pid}] INFO live update: took over" in log


def test_twice_and_the_pid_file_follows(tmp_path: Path) -> None:
    """Each update's new instance takes the pid file; a second update is
    adopted by the anchor too, and SIGTERM reaches the current instance."""
    if not XENSTORE_CONTROL.exists():
        pytest.skip(f"{XENSTORE_CONTROL} is not installed (xen-utils-4.17)")
    pid_file = tmp_path / "xenstored.pid"
    d = start_daemon(["--pid-file", str(pid_file)])
    try:
        assert int(pid_file.read_text()) == d.pid
        with RawConnection(d.socket_path) as c:
            c.expect_ok(WRITE, b"/k\0v")
            pids = []
            for _ in range(2):
                live_update(d)
                pids.append(int(pid_file.read_text()))
                assert c.expect_ok(READ, b"/k\0") == b"v"
        assert len(set(pids)) == 2 and d.pid not in pids
        assert d.alive()
    finally:
        problem = finish_daemon(d)  # SIGTERM to the anchor: the daemon stops cleanly
    assert problem is None, problem
    assert not pid_file.exists()


def test_durability_none_carries_the_tree(tmp_path: Path) -> None:
    """No journal to read: the tree goes with the connections."""
    if not XENSTORE_CONTROL.exists():
        pytest.skip(f"{XENSTORE_CONTROL} is not installed (xen-utils-4.17)")
    d = start_daemon(["--durability", "none"])
    try:
        with RawConnection(d.socket_path) as c:
            for i in range(50):
                c.expect_ok(WRITE, b"/n/%d\0v%d" % (i, i))
            live_update(d)
            assert c.expect_ok(READ, b"/n/49\0") == b"v49"
    finally:
        problem = finish_daemon(d)
    assert problem is None, problem


def test_open_transaction_commits_after_the_update(daemon: Daemon) -> None:
    with RawConnection(daemon.socket_path) as c:
        tx = int(c.expect_ok(TX_START, b"\0").rstrip(b"\0"))
        c.expect_ok(WRITE, b"/t/x\0in-tx", tx_id=tx)
        live_update(daemon)
        assert c.expect_ok(READ, b"/t/x\0", tx_id=tx) == b"in-tx"
        c.expect_ok(WRITE, b"/t/y\0also", tx_id=tx)
        assert c.expect_ok(TX_END, b"T\0", tx_id=tx) == b"OK\0"
        assert c.expect_ok(READ, b"/t/y\0") == b"also"


def test_partial_packet_and_queued_events_cross(daemon: Daemon) -> None:
    with RawConnection(daemon.socket_path) as watcher, \
            RawConnection(daemon.socket_path) as writer, \
            RawConnection(daemon.socket_path) as slow:
        watcher.expect_ok(WATCH, b"/w\0tok\0")
        assert watcher.receive()[0] == WATCH_EVENT  # the initial event
        for i in range(5):
            writer.expect_ok(WRITE, b"/w/%d\0v" % i)  # events queue; nobody reads them
        request = HEADER.pack(WRITE, 42, 0, 9) + b"/p/q\0half"
        slow.send_raw(request[:7])  # half a header
        time.sleep(0.2)
        live_update(daemon)
        slow.send_raw(request[7:])
        assert slow.receive_reply() == (WRITE, 42, 0, b"OK\0")
        events = [watcher.receive() for _ in range(5)]
        assert [e[3] for e in events] == [b"/w/%d\0tok\0" % i for i in range(5)]
        watcher.expect_ok(READ, b"/p/q\0")  # no sixth event came first: exactly once


def test_requests_pipelined_across_the_update(daemon: Daemon) -> None:
    with RawConnection(daemon.socket_path) as c:
        c.expect_ok(WRITE, b"/n\00")
        proc = subprocess.Popen([str(XENSTORE_CONTROL), "live-update", new_binary(daemon)],
                                env=daemon.env(), stdout=subprocess.PIPE, text=True)
        for i in range(200):
            c.send(WRITE, b"/n\0%d" % i, req_id=1000 + i)
        replies = [c.receive_reply() for _ in range(200)]
        assert proc.wait(60) == 0
        assert [(r[0], r[1]) for r in replies] == [(WRITE, 1000 + i) for i in range(200)]
        assert c.expect_ok(READ, b"/n\0") == b"199"


def test_refusals_come_back_as_text(daemon: Daemon) -> None:
    not_executable = os.path.join(daemon.directory, "plain")
    Path(not_executable).write_text("")
    result = control(daemon, "live-update", not_executable)
    assert result.returncode != 0 and "File not executable." in result.stdout + result.stderr
    missing = control(daemon, "live-update", "/nonexistent/xenstored")
    assert "File not accessible." in missing.stdout + missing.stderr
    with RawConnection(daemon.socket_path) as c:
        assert c.expect_ok(CONTROL, b"live-update\0-a\0") == b"No live-update session active.\0"
        assert c.expect_ok(CONTROL, b"live-update\0-s\0") == b"Not in live-update session.\0"


def test_a_binary_that_cannot_run_leaves_the_daemon_serving(daemon: Daemon) -> None:
    broken = os.path.join(daemon.directory, "broken")
    Path(broken).write_bytes(b"\x7fELF garbage")
    os.chmod(broken, 0o755)
    with RawConnection(daemon.socket_path) as c:
        c.expect_ok(WRITE, b"/kept\0yes")
        assert c.expect_ok(CONTROL, b"live-update\0-f\0" + broken.encode() + b"\0") == b"OK\0"
        reply = c.expect_ok(CONTROL, b"live-update\0-s\0-t\x0060\0")
        assert reply == b"Error activating new binary.\0"
        assert c.expect_ok(READ, b"/kept\0") == b"yes"
        # The session is over: a new one may start.
        assert c.expect_ok(CONTROL, b"live-update\0-a\0") == b"No live-update session active.\0"



def test_a_new_instance_that_fails_to_take_over_changes_nothing(daemon: Daemon) -> None:
    """Pointed at another state directory, the new instance cannot catch up
    with the old one's journal: the old one takes its pid file back and
    serves on, open transaction included, and the requester is told."""
    other = os.path.join(daemon.directory, "other-state")
    cmdline = f"--no-fork --socket {daemon.socket_path} --state-dir {other}"
    with RawConnection(daemon.socket_path) as c:
        tx = int(c.expect_ok(TX_START, b"\0").rstrip(b"\0"))
        c.expect_ok(WRITE, b"/f/x\0in-tx", tx_id=tx)
        result = control(daemon, "live-update", "-c", cmdline, new_binary(daemon))
        assert result.returncode != 0
        assert "New instance failed to take over" in result.stdout + result.stderr
        assert c.expect_ok(TX_END, b"T\0", tx_id=tx) == b"OK\0"
        assert c.expect_ok(READ, b"/f/x\0") == b"in-tx"
    log = wait_for_log(daemon, "live update failed")
    assert "took over" not in log


def test_a_new_instance_that_dies_at_start_changes_nothing(daemon: Daemon) -> None:
    with RawConnection(daemon.socket_path) as c:
        c.expect_ok(WRITE, b"/kept\0yes")
        result = control(daemon, "live-update", "-c", "--entry-nb notanumber",
                         new_binary(daemon))
        assert result.returncode != 0
        assert "Error activating new binary." in result.stdout + result.stderr
        assert c.expect_ok(READ, b"/kept\0") == b"yes"


def test_started_with_u_but_nothing_to_take_over(tmp_path: Path) -> None:
    """As C's "No state file found": exit 1, saying so, and bind nothing."""
    argv = [sys.executable, "-m", "pyxenstored", "-N", "-U", "--socket", str(tmp_path / "s"),
            "--state-dir", str(tmp_path / "state")]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LD_PRELOAD": ""})
    assert result.returncode == 1
    assert "no state to take over" in result.stderr
    assert not (tmp_path / "s").exists()
