"""Xenstore daemons running on the stand-in hypervisor: the same scenarios
for Debian's C xenstored and oxenstored and for pyxenstored.

Each test gets a fresh ``$FAKEXEN_DIR`` and daemon (LD_PRELOADed with
libfakexen.so), drives it with the Debian tools or a simulated guest, and
stops it at teardown.
"""

from __future__ import annotations

import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakexen_support import (
    DAEMONS,
    HEADER,
    OXENSTORED,
    XEN_BIN,
    XS_ERROR,
    XS_READ,
    XS_WRITE,
    Daemon,
    FakeXen,
    introduce,
    running_daemon,
    socket_request,
    start_pyxenstored,
)
from guest import Guest

XS_WATCH = 4
XS_WATCH_EVENT = 15
XS_IS_DOMAIN_INTRODUCED = 17
XS_SET_FEATURE = 24
XS_GET_DOMAIN_PATH = 10
SERVER_FEATURES_OFFSET = 2064
EVTCHN_PORT_OFFSET = 2076
TEST_XENSTORE = XEN_BIN / "test-xenstore"


@pytest.fixture(params=sorted(DAEMONS))
def daemon(
    request: pytest.FixtureRequest, fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> Iterator[Daemon]:
    with running_daemon(request.param, fx, tmp_path / "run") as d:
        yield d


def tool(daemon: Daemon, *argv: str) -> str:
    res = subprocess.run(argv, env=daemon.client_env(), capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res.stdout


def test_xenstore_tools(daemon: Daemon) -> None:
    tool(daemon, "xenstore-write", "/fakexen/key", "value")
    assert tool(daemon, "xenstore-read", "/fakexen/key") == "value\n"


def test_test_xenstore(daemon: Daemon) -> None:
    if not TEST_XENSTORE.exists():
        pytest.skip(f"{TEST_XENSTORE} is not installed")
    out = tool(daemon, str(TEST_XENSTORE), "-i", "5")
    assert "ta err" in out


def test_guest_reads_over_ring(daemon: Daemon, fx: FakeXen) -> None:
    fx.set_domain(5, "running")
    guest = Guest(fx.root, 5)
    try:
        tool(daemon, "xenstore-write", "/local/domain/5/name", "guest5")
        tool(daemon, "xenstore-chmod", "-r", "/local/domain/5", "n5")
        introduce(daemon.socket_path, 5, guest.port)

        assert guest.request(XS_READ, b"/local/domain/5/name\0") == (XS_READ, b"guest5")
        assert guest.request(XS_WRITE, b"/local/domain/5/data\0hello") == (XS_WRITE, b"OK\0")
        assert tool(daemon, "xenstore-read", "/local/domain/5/data") == "hello\n"
    finally:
        guest.close()


def test_domain_death_via_virq(daemon: Daemon, fx: FakeXen) -> None:
    fx.set_domain(7, "running")
    guest = Guest(fx.root, 7)
    try:
        introduce(daemon.socket_path, 7, guest.port)
        asked = b"7\0"
        assert socket_request(daemon.socket_path, XS_IS_DOMAIN_INTRODUCED, asked) == b"T\0"

        fx.set_domain(7, "dying")
        assert fx.raise_virq() == 1
        deadline = time.monotonic() + 5
        while socket_request(daemon.socket_path, XS_IS_DOMAIN_INTRODUCED, asked) != b"F\0":
            assert time.monotonic() < deadline, "daemon did not drop the dying domain"
            time.sleep(0.02)
    finally:
        guest.close()


def _guest(daemon: Daemon, fx: FakeXen, domid: int) -> Guest:
    """An introduced guest owning its home directory, as the toolstack sets it up."""
    fx.set_domain(domid, "running")
    guest = Guest(fx.root, domid)
    tool(daemon, "xenstore-write", f"/local/domain/{domid}", "")
    tool(daemon, "xenstore-chmod", f"/local/domain/{domid}", f"n{domid}")
    introduce(daemon.socket_path, domid, guest.port)
    return guest


def test_guest_relative_paths_and_permissions(daemon: Daemon, fx: FakeXen) -> None:
    """Spec 2 and 3.2: relative paths resolve under the guest's home; others' nodes are hidden."""
    guest = _guest(daemon, fx, 5)
    try:
        assert guest.request(XS_WRITE, b"data/x\0one") == (XS_WRITE, b"OK\0")
        assert guest.request(XS_READ, b"/local/domain/5/data/x\0") == (XS_READ, b"one")
        assert tool(daemon, "xenstore-read", "/local/domain/5/data/x") == "one\n"
        tool(daemon, "xenstore-write", "/local/domain/0/secret", "s")
        assert guest.request(XS_READ, b"/local/domain/0/secret\0") == (XS_ERROR, b"EACCES\0")
        assert guest.request(XS_WRITE, b"/elsewhere\0v") == (XS_ERROR, b"EACCES\0")
    finally:
        guest.close()


def test_guest_watch_over_ring(daemon: Daemon, fx: FakeXen) -> None:
    """Spec 5.1/5.2: the initial event, then a relative event for a change dom0 makes."""
    guest = _guest(daemon, fx, 5)
    try:
        guest.req_id += 1
        guest.write_req(HEADER.pack(XS_WATCH, guest.req_id, 0, 9) + b"data\0tok\0")
        messages = [guest.read_message(), guest.read_message()]
        assert (XS_WATCH, guest.req_id, b"OK\0") in messages
        assert (XS_WATCH_EVENT, 0, b"data\0tok\0") in messages
        tool(daemon, "xenstore-write", "/local/domain/5/data/new", "v")
        assert guest.read_message() == (XS_WATCH_EVENT, 0, b"data/new\0tok\0")
    finally:
        guest.close()


def test_hostile_indices_leave_others_served(daemon: Daemon, fx: FakeXen) -> None:
    """XSA-38 / spec 7.2: a ring with prod - cons > 1024 is dropped; nobody else notices."""
    bad = _guest(daemon, fx, 5)
    good = _guest(daemon, fx, 6)
    try:
        bad.set_indices(req_cons=0, req_prod=5000)
        bad.notify()
        assert good.request(XS_WRITE, b"data\0fine") == (XS_WRITE, b"OK\0")
        assert tool(daemon, "xenstore-read", "/local/domain/6/data") == "fine\n"
    finally:
        bad.close()
        good.close()


def test_dom0_kernel_ring(fakexen_library: Path, fx: FakeXen, tmp_path: Path) -> None:
    """Spec 7.6: a daemon in dom0 serves dom0's kernel through /proc/xen/xsd_kva and
    xsd_port; that ring acts as the privileged domain (C ``dom0_init``)."""
    (fx.evtchn / "0-1.sock").unlink()  # the kernel's end, played by this test
    kernel = Guest(fx.root, 0)
    assert kernel.port == 1
    d = start_pyxenstored(fx, tmp_path / "run")
    try:
        assert kernel.request(XS_WRITE, b"/vm/uuid\0abc") == (XS_WRITE, b"OK\0")
        assert kernel.request(XS_READ, b"name\0") == (XS_ERROR, b"ENOENT\0")
        assert kernel.request(XS_IS_DOMAIN_INTRODUCED, b"0\0") == (XS_IS_DOMAIN_INTRODUCED, b"T\0")
        assert socket_request(d.socket_path, XS_READ, b"/vm/uuid\0") == b"abc"
    finally:
        kernel.close()
        assert d.stop() == 0


def test_stub_domain_reaches_dom0_by_grant(
    fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> None:
    """Spec 7.6/9.2: in a xenstore stub domain, ``--event P`` names dom0's port
    and dom0's page is its grant reference 1, not ``/proc/xen/xsd_kva``."""
    kernel = Guest(fx.root, 0)  # dom0's kernel, on a port of its own
    assert kernel.port != 1
    d = start_pyxenstored(fx, tmp_path / "run", "--event", str(kernel.port))
    try:
        assert kernel.request(XS_WRITE, b"/tool/xenstored/domid\x001") == (XS_WRITE, b"OK\0")
        assert socket_request(d.socket_path, XS_READ, b"/tool/xenstored/domid\0") == b"1"
    finally:
        kernel.close()
        assert d.stop() == 0


def test_set_feature_narrows_what_the_ring_advertises(
    fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> None:
    """Spec 1.5 SET_FEATURE: the toolstack's mask before INTRODUCE is what the
    ring's ``server_features`` shows (plus RECONNECTION, which the ring itself offers)."""
    fx.set_domain(5, "running")
    guest = Guest(fx.root, 5)
    d = start_pyxenstored(fx, tmp_path / "run")
    try:
        socket_request(d.socket_path, XS_SET_FEATURE, b"5\x002\x00")  # ERROR only
        introduce(d.socket_path, 5, guest.port)
        assert struct.unpack_from("=I", guest.page, SERVER_FEATURES_OFFSET)[0] == 1 | 2
    finally:
        guest.close()
        assert d.stop() == 0


def test_running_domain_found_at_start(
    fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> None:
    """Spec 7.6 (C >= 4.21): a domain already running whose page carries its
    ``evtchn_port`` (dom0less) is served without an INTRODUCE."""
    fx.set_domain(9, "running")
    guest = Guest(fx.root, 9)
    struct.pack_into("=I", guest.page, EVTCHN_PORT_OFFSET, guest.port)
    d = start_pyxenstored(fx, tmp_path / "run")
    try:
        reply = guest.request(XS_GET_DOMAIN_PATH, b"9\0")
        assert reply == (XS_GET_DOMAIN_PATH, b"/local/domain/9\0")
        assert socket_request(d.socket_path, XS_IS_DOMAIN_INTRODUCED, b"9\0") == b"T\0"
    finally:
        guest.close()
        assert d.stop() == 0


def test_reintroduce_resets_the_connection(daemon: Daemon, fx: FakeXen) -> None:
    """Spec 1.5: INTRODUCE of a known domain drops its watches and queued
    output and zeroes the ring indices; the guest then starts afresh."""
    if daemon.argv[0] == str(OXENSTORED):
        pytest.skip("oxenstored only rebinds the event channel on re-INTRODUCE (spec 1.5)")
    guest = _guest(daemon, fx, 5)
    try:
        guest.req_id += 1
        guest.write_req(HEADER.pack(XS_WATCH, guest.req_id, 0, 9) + b"data\0tok\0")
        guest.read_message()
        guest.read_message()
        introduce(daemon.socket_path, 5, guest.port)
        assert struct.unpack_from("=4I", guest.page, 2048) == (0, 0, 0, 0)
        tool(daemon, "xenstore-write", "/local/domain/5/data/x", "1")  # no watch left
        assert guest.request(XS_READ, b"data/x\0") == (XS_READ, b"1")
    finally:
        guest.close()
