"""Test-side helpers for the stand-in hypervisor (libfakexen.so).

The library and the directory layout it shares with these helpers are
described in docs/testing.md. This module builds the library, lays out a
``$FAKEXEN_DIR`` (dom0's ring and port, the domain list), raises VIRQs, and
starts Debian's C ``xenstored``, ``oxenstored`` or pyxenstored on top of it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LIBRARY = HERE / "build" / "libfakexen.so"
XEN_BIN = Path("/usr/lib/xen-4.17/bin")
C_XENSTORED = XEN_BIN / "xenstored"
OXENSTORED = XEN_BIN / "oxenstored"

PAGE_SIZE = 4096
MAX_PORT = 4096
#: Seconds a helper waits for a daemon's answer. Generous: only a failing
#: test waits this long, and two loaded cores can stall a reply for seconds.
REPLY_TIMEOUT = 20.0
VIRQ_DOM_EXC = 3
DOM0_PORT = 1  # dom0 kernel's end of its xenstore channel (/proc/xen/xsd_port)

# xs_wire.h message types used by the helpers.
XS_READ = 2
XS_INTRODUCE = 8
XS_RELEASE = 9
XS_WRITE = 11
XS_SET_PERMS = 14
XS_ERROR = 16
HEADER = struct.Struct("<IIII")  # type, req_id, tx_id, len


def allocate_unbound_port(evtchn_dir: Path, domid: int) -> tuple[socket.socket, int]:
    """Bind a non-blocking datagram socket at the lowest free ``<domid>-<p>.sock``.

    The same rule as the library's: ``bind`` fails on any existing path, so
    allocation is atomic across processes.
    """
    evtchn_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for port in range(1, MAX_PORT):
        try:
            sock.bind(str(evtchn_dir / f"{domid}-{port}.sock"))
        except OSError:
            continue
        sock.setblocking(False)
        return sock, port
    sock.close()
    raise RuntimeError(f"no free event channel port for domain {domid}")


def build_library() -> Path:
    """Run the Makefile (a no-op when up to date) and return the .so path."""
    if shutil.which("gcc") is None or shutil.which("make") is None:
        raise RuntimeError("gcc and make are needed to build libfakexen.so")
    subprocess.run(["make", "-s", "-C", str(HERE)], check=True)
    return LIBRARY


class FakeXen:
    """One stand-in hypervisor: the state directory ``$FAKEXEN_DIR``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.evtchn = self.root / "evtchn"
        self.evtchn.mkdir(parents=True, exist_ok=True)
        self.domains: dict[int, str] = {}
        self.set_domain(0, "running")
        self.create_ring(0)
        # The dom0 kernel's end is allocated but nobody listens on it; a
        # plain file reserves the port so the daemon does not take it.
        (self.evtchn / f"0-{DOM0_PORT}.sock").touch()
        # No trailing newline: oxenstored does int_of_string on the content,
        # as the real /proc/xen/xsd_port has none.
        (self.root / "xsd_port").write_text(str(DOM0_PORT))

    def ring_path(self, domid: int) -> Path:
        return self.root / f"dom{domid}" / "ring"

    def create_ring(self, domid: int) -> Path:
        """The page a guest grants as ref 1 (zeroed, as a fresh page is)."""
        path = self.ring_path(domid)
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            path.write_bytes(bytes(PAGE_SIZE))
        return path

    def set_domain(self, domid: int, state: str | None) -> None:
        """Set a domain's state (running, paused, shutdown[:reason], crashed,
        dying) or remove it (None); rewritten atomically for the daemon."""
        if state is None:
            self.domains.pop(domid, None)
        else:
            self.domains[domid] = state
        tmp = self.root / "domains.tmp"
        tmp.write_text("".join(f"{d} {s}\n" for d, s in sorted(self.domains.items())))
        tmp.replace(self.root / "domains")

    def raise_virq(self, virq: int = VIRQ_DOM_EXC) -> int:
        """Notify every port bound to ``virq``; returns how many were sent."""
        sent = 0
        vdir = self.root / "virq" / str(virq)
        if not vdir.is_dir():
            return 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for link in vdir.iterdir():
                try:
                    s.sendto(b"virq", str(link))
                    sent += 1
                except OSError:
                    pass  # the binder went away
        return sent


@dataclass
class Daemon:
    """A reference daemon running on the stand-in."""

    proc: subprocess.Popen[bytes]
    socket_path: Path
    env: dict[str, str]
    log: Path
    argv: list[str] = field(default_factory=list)

    def client_env(self) -> dict[str, str]:
        """Environment for the xenstore-* tools and test-xenstore."""
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env["XENSTORED_PATH"] = str(self.socket_path)
        return env

    def stop(self, timeout: float = REPLY_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it lingers (a loaded CI machine once made
        oxenstored take over 5 s); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _daemon_env(fx: FakeXen, rundir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=str(LIBRARY),
        FAKEXEN_DIR=str(fx.root),
        XENSTORED_RUNDIR=str(rundir),
        XENSTORED_PATH=str(rundir / "socket"),
    )
    return env


def _wait_for_socket(daemon: Daemon, timeout: float = 10.0) -> Daemon:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            break
        if daemon.socket_path.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(daemon.socket_path))
                return daemon
            except OSError:
                pass
        time.sleep(0.02)
    daemon.stop()
    log = daemon.log.read_text(errors="replace") if daemon.log.exists() else ""
    raise RuntimeError(f"{daemon.argv[0]} did not come up:\n{log[-2000:]}")


def start_c_xenstored(fx: FakeXen, rundir: Path, *args: str) -> Daemon:
    """Debian's C xenstored in the foreground, socket in ``rundir``."""
    rundir.mkdir(parents=True, exist_ok=True)
    log = rundir / "xenstored.out"
    argv = [str(C_XENSTORED), "--no-fork", "--trace-file", str(rundir / "trace"), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=_daemon_env(fx, rundir), stdout=out, stderr=out)
    return _wait_for_socket(Daemon(proc, rundir / "socket", _daemon_env(fx, rundir), log, argv))


def start_oxenstored(fx: FakeXen, rundir: Path, *args: str, extra_conf: str = "") -> Daemon:
    """Debian's oxenstored; its compiled-in /var/run/xenstored is redirected
    to ``rundir`` by the library, the rest is set in a private config (plus
    ``extra_conf`` lines, e.g. quotas)."""
    rundir.mkdir(parents=True, exist_ok=True)
    conf = rundir / "oxenstored.conf"
    conf.write_text(
        f"pid-file = {rundir}/xenstored.pid\n"
        "persistent = false\n"
        f"xenstored-log-file = {rundir}/xenstored.log\n"
        f"access-log-file = {rundir}/access.log\n"
        "xenstored-kva = /proc/xen/xsd_kva\n"
        "xenstored-port = /proc/xen/xsd_port\n" + extra_conf
    )
    log = rundir / "oxenstored.out"
    argv = [str(OXENSTORED), "--no-fork", "--config-file", str(conf), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=_daemon_env(fx, rundir), stdout=out, stderr=out)
    return _wait_for_socket(Daemon(proc, rundir / "socket", _daemon_env(fx, rundir), log, argv))


def start_pyxenstored(fx: FakeXen, rundir: Path, *args: str) -> Daemon:
    """This project's daemon, its real Xen backend served by the stand-in."""
    rundir.mkdir(parents=True, exist_ok=True)
    log = rundir / "pyxenstored.out"
    argv = [
        sys.executable,
        "-m",
        "pyxenstored",
        "--no-fork",
        "--socket",
        str(rundir / "socket"),
        "--state-dir",
        str(rundir / "state"),
        "--trace-file",
        str(rundir / "trace"),
        *args,
    ]
    env = _daemon_env(fx, rundir)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=REPO)
    return _wait_for_socket(Daemon(proc, rundir / "socket", env, log, argv))


#: Each daemon the scenarios run against: the binary that must exist, and how to start it.
DAEMONS: dict[str, tuple[Path, Callable[..., Daemon]]] = {
    "c": (C_XENSTORED, start_c_xenstored),
    "ocaml": (OXENSTORED, start_oxenstored),
    "py": (Path(sys.executable), start_pyxenstored),
}


@contextmanager
def running_daemon(kind: str, fx: FakeXen, rundir: Path, *args: str) -> Iterator[Daemon]:
    """A daemon of ``kind`` for the length of a test, skipped if not installed;
    at the end it must stop cleanly (C xenstored dies of SIGTERM, the others
    catch it and exit 0)."""
    binary, start = DAEMONS[kind]
    if not binary.exists():
        pytest.skip(f"{binary} is not installed (Debian package xen-utils-4.17)")
    daemon = start(fx, rundir, *args)
    try:
        yield daemon
    finally:
        status = daemon.stop()
    assert status in (0, -signal.SIGTERM), f"{daemon.argv[0]} exited with {status}"


def socket_request(
    path: Path, msg_type: int, payload: bytes, timeout: float = REPLY_TIMEOUT
) -> bytes:
    """One request over the daemon's Unix socket as dom0 (the toolstack).

    Raises OSError with the errno name for an XS_ERROR reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(HEADER.pack(msg_type, 1, 0, len(payload)) + payload)
        head = _recv_exact(s, HEADER.size)
        rtype, _, _, length = HEADER.unpack(head)
        body = _recv_exact(s, length)
    if rtype == XS_ERROR:
        raise OSError(body.rstrip(b"\0").decode())
    return body


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        buf += chunk
    return buf


def introduce(path: Path, domid: int, port: int, gfn: int = 0xFEFFF) -> None:
    """XS_INTRODUCE "<domid>\\0<gfn>\\0<port>\\0", as the toolstack sends it."""
    socket_request(path, XS_INTRODUCE, f"{domid}\0{gfn}\0{port}\0".encode())
