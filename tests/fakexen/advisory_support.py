"""Helpers for the security-advisory scenarios (test_fakexen_advisories.py).

Everything here is synchronous and small: a dom0 connection on the daemon's
socket that keeps watch events apart from replies, a ``Guest`` (guest.py)
that does the same over its ring, and a ``Harness`` that starts one daemon
(C xenstored, oxenstored or pyxenstored) on a fresh stand-in hypervisor,
sets guests up the way the toolstack does, kills domains through
``VIRQ_DOM_EXC``, and checks at the end that the daemon is still alive.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from fakexen_support import (
    C_XENSTORED,
    HEADER,
    OXENSTORED,
    REPLY_TIMEOUT,
    XS_ERROR,
    Daemon,
    FakeXen,
    start_c_xenstored,
    start_oxenstored,
    start_pyxenstored,
)
from guest import Guest

# xs_wire.h message types.
XS_CONTROL = 0
XS_DIRECTORY = 1
XS_READ = 2
XS_GET_PERMS = 3
XS_WATCH = 4
XS_UNWATCH = 5
XS_TRANSACTION_START = 6
XS_TRANSACTION_END = 7
XS_INTRODUCE = 8
XS_RELEASE = 9
XS_WRITE = 11
XS_MKDIR = 12
XS_RM = 13
XS_SET_PERMS = 14
XS_WATCH_EVENT = 15
XS_IS_DOMAIN_INTRODUCED = 17
XS_GET_QUOTA = 25
XS_SET_QUOTA = 26

# xs_wire.h ring error values (spec 7.1).
XENSTORE_ERROR_NONE = 0
XENSTORE_ERROR_RINGIDX = 2
RING_ERROR_OFF = 2072

KINDS = ("c", "ocaml", "py")
BINARIES = {"c": C_XENSTORED, "ocaml": OXENSTORED}


class XsError(OSError):
    """An XS_ERROR reply; ``name`` is the errno name (``EACCES`` ...)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def strings(*parts: str | bytes) -> bytes:
    """Each part NUL-terminated, as most requests carry their arguments."""
    out = b""
    for part in parts:
        out += (part.encode() if isinstance(part, str) else part) + b"\0"
    return out


def split_event(body: bytes) -> tuple[str, str]:
    path, token = body.split(b"\0")[:2]
    return path.decode(), token.decode()


class Ops:
    """The node operations over ``call`` (a request → (type, payload))."""

    def call(self, op: int, payload: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        raise NotImplementedError

    def do(self, op: int, payload: bytes, tx_id: int = 0) -> bytes:
        rtype, body = self.call(op, payload, tx_id)
        if rtype == XS_ERROR:
            raise XsError(body.rstrip(b"\0").decode())
        assert rtype == op, f"reply type {rtype} to request type {op}"
        return body

    def error(self, op: int, payload: bytes, tx_id: int = 0) -> str | None:
        """The errno name of the reply, or None for success."""
        rtype, body = self.call(op, payload, tx_id)
        return body.rstrip(b"\0").decode() if rtype == XS_ERROR else None

    def read(self, path: str) -> bytes:
        return self.do(XS_READ, strings(path))

    def write(self, path: str, value: str | bytes = b"") -> None:
        data = value.encode() if isinstance(value, str) else value
        self.do(XS_WRITE, path.encode() + b"\0" + data)

    def mkdir(self, path: str) -> None:
        self.do(XS_MKDIR, strings(path))

    def rm(self, path: str) -> None:
        self.do(XS_RM, strings(path))

    def directory(self, path: str) -> list[str]:
        body = self.do(XS_DIRECTORY, strings(path))
        return [name.decode() for name in body.split(b"\0") if name]

    def get_perms(self, path: str) -> list[str]:
        body = self.do(XS_GET_PERMS, strings(path))
        return [p.decode() for p in body.split(b"\0") if p]

    def set_perms(self, path: str, *perms: str) -> None:
        self.do(XS_SET_PERMS, strings(path, *perms))

    def watch(self, path: str, token: str) -> None:
        self.do(XS_WATCH, strings(path, token))

    def is_introduced(self, domid: int) -> bool:
        return self.do(XS_IS_DOMAIN_INTRODUCED, strings(str(domid))) == b"T\0"


class Dom0(Ops):
    """dom0 (the toolstack) on a persistent socket connection; watch events
    are kept in ``events`` while waiting for replies."""

    def __init__(self, path: Path, timeout: float = REPLY_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.sock.setblocking(False)
        self.timeout = timeout
        self.buf = b""
        self.req_id = 0
        self.events: list[tuple[str, str]] = []

    def close(self) -> None:
        self.sock.close()

    def _message(self, timeout: float) -> tuple[int, int, bytes] | None:
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= HEADER.size:
                rtype, req_id, _, length = HEADER.unpack_from(self.buf)
                if len(self.buf) >= HEADER.size + length:
                    body = self.buf[HEADER.size : HEADER.size + length]
                    self.buf = self.buf[HEADER.size + length :]
                    return rtype, req_id, body
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if select.select([self.sock], [], [], left)[0]:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the daemon closed dom0's connection")
                self.buf += chunk

    def call(self, op: int, payload: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        self.req_id += 1
        self.sock.setblocking(True)
        self.sock.sendall(HEADER.pack(op, self.req_id, tx_id, len(payload)) + payload)
        self.sock.setblocking(False)
        while True:
            msg = self._message(self.timeout)
            if msg is None:
                raise TimeoutError(f"no reply from the daemon to dom0's request type {op}")
            rtype, req_id, body = msg
            if rtype == XS_WATCH_EVENT:
                self.events.append(split_event(body))
                continue
            assert req_id == self.req_id, f"reply to {req_id}, expected {self.req_id}"
            return rtype, body

    def next_event(self, timeout: float = REPLY_TIMEOUT) -> tuple[str, str] | None:
        if self.events:
            return self.events.pop(0)
        msg = self._message(timeout)
        if msg is None:
            return None
        assert msg[0] == XS_WATCH_EVENT, f"unexpected message {msg}"
        return split_event(msg[2])

    def control(self, *args: str) -> str:
        return self.do(XS_CONTROL, strings(*args)).rstrip(b"\0").decode()


class XsGuest(Guest, Ops):
    """guest.py's Guest, keeping watch events apart from replies."""

    def __init__(self, fakexen_dir: Path, domid: int) -> None:
        super().__init__(fakexen_dir, domid)
        self.events: list[tuple[str, str]] = []

    def call(
        self, op: int, payload: bytes, tx_id: int = 0, timeout: float = REPLY_TIMEOUT
    ) -> tuple[int, bytes]:
        self.req_id += 1
        self.write_req(HEADER.pack(op, self.req_id, tx_id, len(payload)) + payload, timeout)
        while True:
            rtype, req_id, body = self.read_message(timeout)
            if rtype == XS_WATCH_EVENT:
                self.events.append(split_event(body))
                continue
            assert req_id == self.req_id, f"reply to {req_id}, expected {self.req_id}"
            return rtype, body

    def next_event(self, timeout: float = REPLY_TIMEOUT) -> tuple[str, str] | None:
        if self.events:
            return self.events.pop(0)
        try:
            rtype, _, body = self.read_message(timeout)
        except TimeoutError:
            return None
        assert rtype == XS_WATCH_EVENT, f"unexpected message type {rtype}"
        return split_event(body)

    @property
    def ring_error(self) -> int:
        return struct.unpack_from("=I", self.page, RING_ERROR_OFF)[0]


def wait_until(predicate: Callable[[], object], what: str, timeout: float = REPLY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def launch(kind: str, fx: FakeXen, rundir: Path, nodes_quota: int | None = None) -> Daemon:
    """Start daemon ``kind`` (c, ocaml, py), optionally with a nodes quota
    (``-E`` for C and pyxenstored, ``quota-maxentity`` for oxenstored)."""
    args = ("-E", str(nodes_quota)) if nodes_quota is not None else ()
    if kind == "c":
        return start_c_xenstored(fx, rundir, *args)
    if kind == "py":
        return start_pyxenstored(fx, rundir, *args)
    extra = f"quota-maxentity = {nodes_quota}\n" if nodes_quota is not None else ""
    return start_oxenstored(fx, rundir, extra_conf=extra)


class Harness:
    """One daemon on a fresh stand-in, dom0's connection, and guests."""

    def __init__(self, kind: str, tmp: Path, nodes_quota: int | None = None) -> None:
        self.kind = kind
        self.fx = FakeXen(tmp / "fx")
        self.daemon = launch(kind, self.fx, tmp / "run", nodes_quota)
        self.guests: list[XsGuest] = []
        try:
            self.dom0 = Dom0(self.daemon.socket_path)
        except OSError:
            self.daemon.stop()
            raise

    def env(self) -> dict[str, str]:
        return self.daemon.client_env()

    def guest(self, domid: int, *, home: bool = True, fresh: bool = True) -> XsGuest:
        """A running, introduced domain ``domid``; ``home``: dom0 first makes
        ``/local/domain/<domid>`` owned by it (as libxl does); ``fresh``: a new
        zeroed ring page (a new domain, not the old one's page)."""
        self.fx.set_domain(domid, "running")
        if fresh:
            self.fx.ring_path(domid).unlink(missing_ok=True)
        g = XsGuest(self.fx.root, domid)
        self.guests.append(g)
        if home:
            self.dom0.mkdir(f"/local/domain/{domid}")
            self.dom0.set_perms(f"/local/domain/{domid}", f"n{domid}")
        self.introduce(domid, g.port)
        return g

    def introduce(self, domid: int, port: int) -> None:
        self.dom0.do(XS_INTRODUCE, strings(str(domid), "1044479", str(port)))

    def drop(self, g: XsGuest) -> None:
        """Close a guest's side (its page and port)."""
        if g in self.guests:
            self.guests.remove(g)
            g.close()

    def kill(self, domid: int, *, state: str | None = "dying") -> None:
        """The domain dies: ``state`` in the domain list (``dying``, or None
        for gone at once), VIRQ_DOM_EXC, wait until the daemon released it;
        then it is gone from the hypervisor too."""
        self.fx.set_domain(domid, state)
        self.fx.raise_virq()
        wait_until(lambda: not self.dom0.is_introduced(domid), f"domain {domid} is released")
        self.fx.set_domain(domid, None)
        self.fx.raise_virq()

    def assert_alive(self) -> None:
        status = self.daemon.proc.poll()
        log = self.daemon.log.read_text(errors="replace")[-2000:] if status is not None else ""
        assert status is None, f"{self.kind} daemon died with status {status}:\n{log}"

    def close(self) -> int | None:
        """Close guests and dom0, stop the daemon; its exit status, or None
        if it had already died (a crash)."""
        for g in self.guests:
            g.close()
        self.guests.clear()
        self.dom0.close()
        crashed = self.daemon.proc.poll() is not None
        status = self.daemon.stop()
        return None if crashed else status


def control_nodes(dom0: Dom0, domid: int) -> int:
    """The domain's node count from CONTROL ``quota <domid>`` (C/pyxenstored
    ``nodes : N``, oxenstored ``domN quota: N/max``)."""
    text = dom0.control("quota", str(domid))
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() == "nodes":
            return int(rest.split()[0])
        if key.strip() == f"dom{domid} quota":
            return int(rest.strip().split("/")[0])
    raise AssertionError(f"no node count in {text!r}")


def binary_missing(kind: str) -> str | None:
    binary = BINARIES.get(kind)
    if binary is not None and not binary.exists():
        return f"{binary} is not installed (Debian package xen-utils-4.17)"
    return None
