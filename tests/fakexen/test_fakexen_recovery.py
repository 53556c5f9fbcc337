"""Crash recovery over real rings (issue 5): pyxenstored is killed with SIGKILL
and restarted on the same state directory; the guest keeps its ring page and
event channel and does not reconnect.

Expected: every acknowledged write is back, the guest's ring is re-attached,
its watch is restored and fires once (so it re-reads), later changes reach it,
and a transaction it had open answers EAGAIN, after which a retry commits.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakexen_support import (
    HEADER,
    REPLY_TIMEOUT,
    XS_ERROR,
    XS_READ,
    XS_WRITE,
    Daemon,
    FakeXen,
    introduce,
    socket_request,
    start_pyxenstored,
)
from guest import Guest

XS_WATCH = 4
XS_TRANSACTION_START = 6
XS_TRANSACTION_END = 7
XS_WATCH_EVENT = 15


@pytest.fixture
def guest(fakexen_library: Path, fx: FakeXen) -> Iterator[Guest]:
    fx.set_domain(5, "running")
    g = Guest(fx.root, 5)
    yield g
    g.close()


def _kill_and_restart(daemon: Daemon, fx: FakeXen, rundir: Path) -> Daemon:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()
    return start_pyxenstored(fx, rundir)


def test_guest_survives_a_crash(fx: FakeXen, guest: Guest, tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    daemon = start_pyxenstored(fx, rundir)
    try:
        sock = daemon.socket_path
        socket_request(sock, XS_WRITE, b"/local/domain/5\0")
        socket_request(sock, 14, b"/local/domain/5\0n5\0")  # SET_PERMS
        introduce(sock, 5, guest.port)
        assert guest.request(XS_WRITE, b"data/before\0one") == (XS_WRITE, b"OK\0")
        guest.req_id += 1
        guest.write_req(HEADER.pack(XS_WATCH, guest.req_id, 0, 9) + b"data\0tok\0")
        first = {guest.read_message(), guest.read_message()}
        assert first == {(XS_WATCH, guest.req_id, b"OK\0"), (XS_WATCH_EVENT, 0, b"data\0tok\0")}
        kind, tx_payload = guest.request(XS_TRANSACTION_START, b"\0")
        assert kind == XS_TRANSACTION_START
        tx = int(tx_payload.rstrip(b"\0"))
        assert guest.request(XS_WRITE, b"data/in-tx\0x", tx) == (XS_WRITE, b"OK\0")

        daemon = _kill_and_restart(daemon, fx, rundir)

        log = daemon.log.read_text()
        assert "restored" in log and "1 watches" in log, log
        # The restored watch fires once, on the re-attached ring.
        assert guest.read_message() == (XS_WATCH_EVENT, 0, b"data\0tok\0")
        assert guest.request(XS_READ, b"data/before\0") == (XS_READ, b"one")
        assert socket_request(sock, XS_READ, b"/local/domain/5/data/before\0") == b"one"
        # The open transaction is gone: EAGAIN, then a retry commits.
        assert guest.request(XS_WRITE, b"data/in-tx\0x", tx) == (XS_ERROR, b"EAGAIN\0")
        assert guest.request(XS_TRANSACTION_END, b"T\0", tx) == (XS_ERROR, b"EAGAIN\0")
        kind, tx_payload = guest.request(XS_TRANSACTION_START, b"\0")
        retry = int(tx_payload.rstrip(b"\0"))
        assert guest.request(XS_WRITE, b"data/in-tx\0y", retry) == (XS_WRITE, b"OK\0")
        # The commit's event comes before its reply (spec 5.3).
        guest.req_id += 1
        guest.write_req(HEADER.pack(XS_TRANSACTION_END, guest.req_id, retry, 2) + b"T\0")
        assert guest.read_message() == (XS_WATCH_EVENT, 0, b"data/in-tx\0tok\0")
        assert guest.read_message() == (XS_TRANSACTION_END, guest.req_id, b"OK\0")
        # Changes after the restart reach the restored watch.
        socket_request(sock, XS_WRITE, b"/local/domain/5/data/after\0two")
        assert guest.read_message() == (XS_WATCH_EVENT, 0, b"data/after\0tok\0")
    finally:
        daemon.stop()


def _guest_home(daemon: Daemon, guest: Guest) -> None:
    socket_request(daemon.socket_path, XS_WRITE, b"/local/domain/5\0")
    socket_request(daemon.socket_path, 14, b"/local/domain/5\0n5\0")  # SET_PERMS
    introduce(daemon.socket_path, 5, guest.port)


def test_request_split_across_a_crash(fx: FakeXen, guest: Guest, tmp_path: Path) -> None:
    """A request larger than the ring is taken in pieces; the journal keeps the
    piece the dead daemon took, so the new one completes it (found by the
    crash drill: the rest used to be parsed as a header)."""
    rundir = tmp_path / "run"
    daemon = start_pyxenstored(fx, rundir)
    try:
        _guest_home(daemon, guest)
        payload = b"data/big\0" + b"x" * 1991
        message = HEADER.pack(XS_WRITE, 7, 0, len(payload)) + payload
        guest.write_req(message[:1000])
        deadline = time.monotonic() + REPLY_TIMEOUT
        while guest._indices()[0] != guest._indices()[1]:  # req_cons reaches req_prod
            assert time.monotonic() < deadline, "the daemon did not take the first piece"
            time.sleep(0.01)
        daemon = _kill_and_restart(daemon, fx, rundir)
        guest.write_req(message[1000:])
        guest.write_req(HEADER.pack(XS_READ, 8, 0, 9) + b"data/big\0")
        assert guest.read_message() == (XS_WRITE, 7, b"OK\0")
        assert guest.read_message() == (XS_READ, 8, b"x" * 1991)
    finally:
        daemon.stop()


def test_replies_owed_at_a_crash_are_sent(fx: FakeXen, guest: Guest, tmp_path: Path) -> None:
    """Replies queued behind a full response ring, one of them half copied,
    are journaled with the ring: after the restart the guest reads each whole,
    in order, then its restored watch's event (found by the crash drill)."""
    rundir = tmp_path / "run"
    daemon = start_pyxenstored(fx, rundir)
    try:
        _guest_home(daemon, guest)
        socket_request(daemon.socket_path, XS_WRITE, b"/local/domain/5/big\0" + b"v" * 500)
        guest.req_id = 50
        guest.write_req(HEADER.pack(XS_WATCH, 50, 0, 6) + b"big\0t\0")
        assert {guest.read_message()[0], guest.read_message()[0]} == {XS_WATCH, XS_WATCH_EVENT}
        reads = [HEADER.pack(XS_READ, 1 + i, 0, 4) + b"big\0" for i in range(5)]
        guest.write_req(b"".join(reads) + HEADER.pack(XS_WRITE, 99, 0, 9) + b"after\0new")
        deadline = time.monotonic() + REPLY_TIMEOUT
        # Wait for the WRITE (a DIRECTORY from dom0); the guest reads nothing meanwhile.
        while b"after" not in socket_request(daemon.socket_path, 1, b"/local/domain/5\0"):
            assert time.monotonic() < deadline, "the WRITE was not applied"
            time.sleep(0.01)
        daemon = _kill_and_restart(daemon, fx, rundir)
        for req_id in range(1, 6):
            assert guest.read_message() == (XS_READ, req_id, b"v" * 500)
        assert guest.read_message() == (XS_WRITE, 99, b"OK\0")
        assert guest.read_message() == (XS_WATCH_EVENT, 0, b"big\0t\0")
    finally:
        daemon.stop()
