"""Live update with a guest on a ring (issue 6): the guest keeps its ring and
its watch, a request it had half written completes, and nothing fires twice;
an update that fails gives the ring back to the old instance."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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

XS_WATCH, XS_TRANSACTION_START, XS_TRANSACTION_END, XS_WATCH_EVENT = 4, 6, 7, 15
XENSTORE_CONTROL = Path("/usr/lib/xen-4.17/bin/xenstore-control")
REPO = Path(__file__).resolve().parents[2]


def test_guest_keeps_ring_watch_and_transaction(
    fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> None:
    if not XENSTORE_CONTROL.exists():
        pytest.skip(f"{XENSTORE_CONTROL} is not installed")
    fx.set_domain(5, "running")
    guest = Guest(fx.root, 5)
    daemon = start_pyxenstored(fx, tmp_path / "run")
    try:
        sock = daemon.socket_path
        socket_request(sock, XS_WRITE, b"/local/domain/5\0")
        socket_request(sock, 14, b"/local/domain/5\0n5\0")
        introduce(sock, 5, guest.port)
        guest.req_id = 10
        guest.write_req(HEADER.pack(XS_WATCH, 10, 0, 9) + b"data\0tok\0")
        assert {guest.read_message(), guest.read_message()} == {
            (XS_WATCH, 10, b"OK\0"), (XS_WATCH_EVENT, 0, b"data\0tok\0")}
        _, tx_payload = guest.request(XS_TRANSACTION_START, b"\0")
        tx = int(tx_payload.rstrip(b"\0"))
        assert guest.request(XS_WRITE, b"data/in-tx\0x", tx) == (XS_WRITE, b"OK\0")
        request = HEADER.pack(XS_READ, 77, 0, 11) + b"data/in-tx\0"
        guest.write_req(request[:10])  # half a request in the ring

        result = live_update(daemon, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + REPLY_TIMEOUT
        while "took over" not in daemon.log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)

        guest.write_req(request[10:])
        assert guest.read_message() == (XS_ERROR, 77, b"ENOENT\0")  # not committed yet
        guest.write_req(HEADER.pack(XS_TRANSACTION_END, 78, tx, 2) + b"T\0")
        assert guest.read_message() == (XS_WATCH_EVENT, 0, b"data/in-tx\0tok\0")
        assert guest.read_message() == (XS_TRANSACTION_END, 78, b"OK\0")
        socket_request(sock, XS_WRITE, b"/local/domain/5/data/after\0v")
        assert guest.read_message() == (XS_WATCH_EVENT, 0, b"data/after\0tok\0")
    finally:
        daemon.stop()
        guest.close()


def live_update(daemon: Daemon, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = tmp_path / "pyxenstored-new"
    binary.write_text(f'#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m pyxenstored "$@"\n')
    os.chmod(binary, 0o755)
    return subprocess.run([str(XENSTORE_CONTROL), "live-update", *args, str(binary)],
                          env=daemon.client_env(), capture_output=True, text=True, timeout=60)


def test_failed_update_gives_the_ring_back(
    fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> None:
    """The old instance had let go of the guest's port for the new one; when
    the new one fails it binds it again, and the guest's ring, watch and
    requests carry on."""
    if not XENSTORE_CONTROL.exists():
        pytest.skip(f"{XENSTORE_CONTROL} is not installed")
    fx.set_domain(6, "running")
    guest = Guest(fx.root, 6)
    daemon = start_pyxenstored(fx, tmp_path / "run")
    try:
        sock = daemon.socket_path
        socket_request(sock, XS_WRITE, b"/local/domain/6\0")
        socket_request(sock, 14, b"/local/domain/6\0n6\0")
        introduce(sock, 6, guest.port)
        guest.req_id = 10
        guest.write_req(HEADER.pack(XS_WATCH, 10, 0, 9) + b"data\0tok\0")
        assert {guest.read_message(), guest.read_message()} == {
            (XS_WATCH, 10, b"OK\0"), (XS_WATCH_EVENT, 0, b"data\0tok\0")}
        cmdline = f"--no-fork --socket {sock} --state-dir {tmp_path / 'elsewhere'}"
        result = live_update(daemon, tmp_path, "-c", cmdline)
        assert "New instance failed to take over" in result.stdout + result.stderr
        guest.write_req(HEADER.pack(XS_WRITE, 20, 0, 12) + b"data/after\0v")
        assert {guest.read_message(), guest.read_message()} == {  # no event twice
            (XS_WRITE, 20, b"OK\0"), (XS_WATCH_EVENT, 0, b"data/after\0tok\0")}
        guest.req_id = 20
        assert guest.request(XS_READ, b"data/after\0") == (XS_READ, b"v")
        log = daemon.log.read_text()
        assert "live update failed" in log and log.count("domain 6: ring attached") == 2
    finally:
        daemon.stop()
        guest.close()
