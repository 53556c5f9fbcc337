"""Make a real C xenstored 4.17 live-update state dump.

    .venv/bin/python tests/persist/data/make_c417_dump.py [OUT]

writes ``OUT`` (default: ``c417_state_dump.bin`` next to this file). It
runs Debian's ``/usr/lib/xen-4.17/bin/xenstored`` on the stand-in
hypervisor (tests/fakexen, docs/testing.md), fills it with the scene below,
and starts a live update with Xen's own ``xenstore-control live-update``.
The "new binary" is a shell script that copies
``$XENSTORED_RUNDIR/state_dump`` (which C writes just before it execs the
new binary) to ``OUT`` and exits. ``tests/persist/test_migration.py`` runs
the same function live and reads the committed file.

The scene (C 4.17 writes a version 1 stream: no quota or domain records):

- ``/vm/a`` = "1" (n0 r9: domain 9 never existed, so the entry is stale),
  ``/vm/b`` = "two" (n0 r5 w7: domain 7 dies later, its entry goes stale),
  ``/vm/bin`` = bytes 00 01 fe ff;
- ``/local/domain/5`` (n5 r0) and ``/local/domain/6`` (n6); domains 5 and 6
  introduced over stand-in rings; SET_TARGET makes 6 act for 5;
- domain 5 watches ``data`` (relative) with token ``tok1`` and
  ``@releaseDomain`` with ``tok3``; domain 6 watches ``/local/domain/5``
  with ``t6``; a dom0 socket client watches ``/vm`` with ``vmtok``;
- 40 writes of ``/local/domain/5/data/nNN`` = "v" whose events neither
  guest reads: their rings fill, C keeps the rest queued, a message half
  written at the head (CONNECTION_DATA out-resp-len);
- domain 6 has sent half a request (a WRITE header and 10 of its 20 bytes)
  and holds an open transaction, which ``-F`` lets C drop;
- C runs with ``-Q outstanding=30``, which the stream cannot carry.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAKEXEN = HERE.parents[1] / "fakexen"
if str(FAKEXEN) not in sys.path:
    sys.path.insert(0, str(FAKEXEN))

from fakexen_support import (  # noqa: E402
    HEADER,
    XEN_BIN,
    FakeXen,
    build_library,
    introduce,
    socket_request,
    start_c_xenstored,
)
from guest import IDX, IDX_OFF, RING_SIZE, Guest  # noqa: E402

DUMP = HERE / "c417_state_dump.bin"
XENSTORE_CONTROL = XEN_BIN / "xenstore-control"
WRITES = 40
XS_WATCH, XS_TRANSACTION_START, XS_WRITE, XS_SET_PERMS, XS_SET_TARGET = 4, 6, 11, 14, 19
#: The half request domain 6 leaves in its ring: WRITE, req_id 99, 20 bytes.
PARTIAL_REQUEST = HEADER.pack(XS_WRITE, 99, 0, 20) + b"/local/dom"


def _nul(*args: str) -> bytes:
    return b"".join(arg.encode() + b"\0" for arg in args)


def _ring_full(guest: Guest) -> bool:
    _, _, rsp_cons, rsp_prod = IDX.unpack_from(guest.page, IDX_OFF)
    return (rsp_prod - rsp_cons) & 0xFFFFFFFF == RING_SIZE


def local_port(fx: FakeXen, domid: int, port: int) -> int:
    """The daemon's end of ``domid``'s port, from the stand-in's peer link."""
    target = os.readlink(fx.evtchn / f"{domid}-{port}.peer")
    return int(Path(target).name.split("-")[1].split(".")[0])


def make_dump(workdir: Path, out: Path) -> dict[str, object]:
    """Run the scene and the live update; return what the stream must say
    that depends on the run (the daemon's event channel ports)."""
    build_library()
    fx = FakeXen(workdir / "fx")
    daemon = start_c_xenstored(fx, workdir / "run", "-Q", "outstanding=30")
    guests: list[Guest] = []
    watcher = socket.socket(socket.AF_UNIX)
    try:
        path = daemon.socket_path
        for domid in (5, 6, 7):
            fx.set_domain(domid, "running")
        socket_request(path, XS_WRITE, b"/vm/a\0" + b"1")
        socket_request(path, XS_WRITE, b"/vm/b\0" + b"two")
        socket_request(path, XS_WRITE, b"/vm/bin\0" + bytes([0, 1, 0xFE, 0xFF]))
        socket_request(path, XS_SET_PERMS, _nul("/vm/a", "n0", "r9"))
        socket_request(path, XS_SET_PERMS, _nul("/vm/b", "n0", "r5", "w7"))
        fx.set_domain(7, None)
        fx.raise_virq()
        for domid, perms in ((5, ("n5", "r0")), (6, ("n6",))):
            socket_request(path, XS_WRITE, f"/local/domain/{domid}\0".encode())
            socket_request(path, XS_SET_PERMS, _nul(f"/local/domain/{domid}", *perms))
        g5, g6 = Guest(fx.root, 5), Guest(fx.root, 6)
        guests += [g5, g6]
        introduce(path, 5, g5.port)
        introduce(path, 6, g6.port)
        socket_request(path, XS_SET_TARGET, _nul("6", "5"))
        for guest, args in (
            (g6, ("/local/domain/5", "t6")),
            (g5, ("data", "tok1")),
            (g5, ("@releaseDomain", "tok3")),
        ):
            assert guest.request(XS_WATCH, _nul(*args)) == (XS_WATCH, b"OK\0")
            guest.read_message()  # the initial event
        assert g6.request(XS_TRANSACTION_START, b"\0")[0] == XS_TRANSACTION_START
        watcher.settimeout(20)
        watcher.connect(str(path))
        payload = _nul("/vm", "vmtok")
        watcher.sendall(HEADER.pack(XS_WATCH, 1, 0, len(payload)) + payload)
        expected = HEADER.size * 2 + 3 + len(payload)  # reply "OK\0", then the event
        received = b""
        while len(received) < expected:
            received += watcher.recv(expected - len(received))
        g6.write_req(PARTIAL_REQUEST)
        for i in range(WRITES):
            socket_request(path, XS_WRITE, f"/local/domain/5/data/n{i:02d}\0v".encode())
        deadline = time.monotonic() + 20
        while not all(_ring_full(g) for g in guests):
            if time.monotonic() > deadline:
                raise TimeoutError("the guests' response rings did not fill")
            time.sleep(0.02)
        ports = {
            0: local_port(fx, 0, 1),
            5: local_port(fx, 5, g5.port),
            6: local_port(fx, 6, g6.port),
        }
        out.unlink(missing_ok=True)
        script = workdir / "copy-state-dump.sh"
        script.write_text(f'#!/bin/sh\ncp "$XENSTORED_RUNDIR/state_dump" "{out}"\nexit 0\n')
        script.chmod(0o755)
        # -F -t 1: after a second, domain 6's open transaction no longer
        # holds the update back. xenstore-control then reports a failure:
        # the new "daemon" exits instead of answering.
        subprocess.run(
            [str(XENSTORE_CONTROL), "live-update", "-F", "-t", "1", str(script)],
            env=daemon.client_env(),
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        while not out.exists() or daemon.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("C xenstored wrote no state_dump")
            time.sleep(0.02)
        return {"ports": ports, "guest_ports": {5: g5.port, 6: g6.port}}
    finally:
        watcher.close()
        for guest in guests:
            guest.close()
        daemon.stop()


if __name__ == "__main__":  # pragma: no cover - regenerates the test data
    import tempfile

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DUMP
    with tempfile.TemporaryDirectory(prefix="c417-", dir="/tmp") as tmp:
        facts = make_dump(Path(tmp), target.resolve())
    print(f"{target}: {target.stat().st_size} bytes; {facts}")
