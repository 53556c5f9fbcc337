"""Crash recovery over real rings (issue 5): pyxenstored is killed with SIGKILL
and restarted on the same state directory; the guest keeps its ring page and
event channel and does not reconnect.

Expected: every acknowledged write is back, the guest's ring is re-attached,
its watch is restored and fires once (so it re-reads), later changes reach it,
and a transaction it had open answers EAGAIN, after which a retry commits.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakexen_support import (
    HEADER,
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
