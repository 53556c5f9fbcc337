"""Live fuzzing: generated requests over a real socket against a running daemon.

Sends batches of generated packets (pipelined, in arbitrary chunks) on a fuzz
connection, and raw hostile byte streams on throw-away connections; after
every batch it checks that the daemon is alive and that a second, well-behaved
connection still gets correct answers; at the end CONTROL ``check`` must say
OK. ``python -m fuzz live --socket PATH --seconds N`` (without ``--socket`` it
starts pyxenstored itself, under the stand-in hypervisor when it can be built).

Only CONTROL commands that touch no files and start no live update are sent.
"""

from __future__ import annotations

import os
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from fuzz.strategies import byte_streams, chunked, packets
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, PAYLOAD_MAX, Packet

REPO = Path(__file__).resolve().parents[1]


class LiveError(AssertionError):
    """The daemon died, hung, or answered a probe wrongly."""


def _connect(path: Path, timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            return s
        except (BlockingIOError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _read_replies(s: socket.socket, count: int) -> list[tuple[int, int, bytes]]:
    """Read until ``count`` non-event packets came back (or EOF)."""
    buf = b""
    out: list[tuple[int, int, bytes]] = []
    while len(out) < count:
        while len(buf) >= HEADER.size:
            t, r, _x, n = HEADER.unpack_from(buf)
            if len(buf) < HEADER.size + n:
                break
            if t != Op.WATCH_EVENT:
                out.append((t, r, buf[HEADER.size : HEADER.size + n]))
            buf = buf[HEADER.size + n :]
        if len(out) >= count:
            break
        data = s.recv(65536)
        if not data:
            break
        buf += data
    return out


def request(s: socket.socket, op: int, payload: bytes, req_id: int = 1) -> tuple[int, bytes]:
    s.sendall(Packet(op, req_id, 0, payload).encode())
    got = _read_replies(s, 1)
    if not got:
        raise LiveError("connection closed")
    return got[0][0], got[0][2]


def probe(path: Path, probe_sock: socket.socket, n: int) -> None:
    """The well-behaved second connection: write, read back, and a new connection."""
    value = f"v{n}".encode()
    if request(probe_sock, Op.WRITE, b"/live-probe\0" + value) != (Op.WRITE, b"OK\0"):
        raise LiveError("probe write failed")
    if request(probe_sock, Op.READ, b"/live-probe\0") != (Op.READ, value):
        raise LiveError("probe read gave the wrong value")
    with _connect(path) as fresh:
        reply = request(fresh, Op.GET_DOMAIN_PATH, b"0\0")
        if reply != (Op.GET_DOMAIN_PATH, b"/local/domain/0\0"):
            raise LiveError(f"fresh connection got {reply!r}")


def _safe(packet: Packet) -> bool:
    """No file-writing or live-update CONTROL commands; nothing over 4096."""
    if packet.type == Op.CONTROL:
        cmd = packet.payload.split(b"\0", 1)[0]
        if cmd in (b"live-update", b"logfile", b"memreport"):
            return False
    return len(packet.payload) <= PAYLOAD_MAX


def fuzz_socket(path: Path, seconds: float, seed: int = 0, daemon: object | None = None) -> int:
    """Fuzz for ``seconds``; returns how many requests were answered."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    probe_sock = _connect(path)
    stats = {"requests": 0, "batches": 0}

    def alive() -> None:
        proc = getattr(daemon, "proc", None)
        if proc is not None and proc.poll() is not None:
            raise LiveError(f"daemon exited with status {proc.returncode}")

    @settings(max_examples=50, phases=[Phase.generate], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(packets(tx_ids=st.sampled_from([0, 0, 1, 2, 3])), min_size=1, max_size=20),
           st.lists(st.integers(0, 100_000), max_size=6), byte_streams())
    def batch(pkts: list[Packet], cuts: list[int], hostile: list[bytes]) -> None:
        if time.monotonic() > deadline:
            return
        good = [p for p in pkts if _safe(p)]
        with _connect(path) as s:
            data = b"".join(p.encode() for p in good)
            for chunk in chunked(data, cuts):
                s.sendall(chunk)
            got = _read_replies(s, len(good))
            if len(got) != len(good):
                raise LiveError(f"{len(good)} requests, {len(got)} replies")
            stats["requests"] += len(got)
        if rng.random() < 0.5:
            with _connect(path) as h:
                try:
                    for chunk in hostile:
                        h.sendall(chunk)
                    h.shutdown(socket.SHUT_WR)
                    h.settimeout(2)
                    while h.recv(65536):
                        pass
                except OSError:
                    pass  # the daemon closed it: allowed
        alive()
        stats["batches"] += 1
        probe(path, probe_sock, stats["batches"])

    round_ = 0
    while time.monotonic() < deadline:
        hseed(seed * 1_000_003 + round_)(batch)()
        round_ += 1
    reply = request(probe_sock, Op.CONTROL, b"check\0")
    if reply != (Op.CONTROL, b"OK\0"):
        raise LiveError(f"CONTROL check answered {reply!r}")
    probe_sock.close()
    alive()
    return stats["requests"]


class Started:
    """A daemon this fuzzer started, watched for dying (``fuzz_socket``'s ``daemon``)."""

    def __init__(self, argv: list[str], socket_path: Path, env: dict[str, str] | None = None):
        self.socket_path = socket_path
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LiveError(f"{argv[0]} exited with status {self.proc.returncode}")
            time.sleep(0.02)

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(5)


def start_command(command: str, workdir: Path) -> Started:
    """Any daemon: ``command`` with ``{socket}`` and ``{dir}`` filled in, e.g.
    ``--command "/usr/sbin/xenstored -N -T /dev/null"`` with XENSTORED_PATH
    set by us to ``{socket}``."""
    sock = workdir / "socket"
    argv = shlex.split(command.format(socket=sock, dir=workdir))
    env = {**os.environ, "XENSTORED_PATH": str(sock), "XENSTORED_RUNDIR": str(workdir)}
    return Started(argv, sock, env)


def start_pyxenstored(workdir: Path) -> object:
    """pyxenstored on the stand-in if it builds, else a plain socket-only daemon."""
    sys.path.insert(0, str(REPO / "tests" / "fakexen"))
    try:
        import fakexen_support as fxs

        fxs.build_library()
        fx = fxs.FakeXen(workdir / "fx")
        return fxs.start_pyxenstored(fx, workdir / "run")
    except Exception:  # no gcc/headers: run without the stand-in
        sock = workdir / "socket"
        return Started([sys.executable, "-m", "pyxenstored", "--no-fork", "--socket", str(sock),
                        "--state-dir", str(workdir / "state")], sock)


def main(socket_path: Path | None, seconds: float, seed: int = 0,
         command: str | None = None) -> int:
    if socket_path is not None:
        n = fuzz_socket(socket_path, seconds, seed)
        print(f"live: {n} requests answered, daemon alive, CONTROL check OK")
        return 0
    with tempfile.TemporaryDirectory(prefix="fzl") as tmp:
        workdir = Path(tmp)
        daemon = start_command(command, workdir) if command else start_pyxenstored(workdir)
        try:
            n = fuzz_socket(daemon.socket_path, seconds, seed, daemon)  # type: ignore[attr-defined]
        finally:
            daemon.stop()  # type: ignore[attr-defined]
    print(f"live: {n} requests answered, daemon alive, CONTROL check OK")
    return 0
