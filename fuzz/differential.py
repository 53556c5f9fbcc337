"""Differential runs: identical generated sequences against pyxenstored and a
reference daemon (Debian's C xenstored 4.17 or oxenstored 4.17), both started
under the stand-in hypervisor (``tests/fakexen``), compared reply by reply.

Each *example* is a list of ``Step``s on two dom0 socket connections. Before
each example both daemons are put back into the same state (``reset``). A
step's result is every packet its connection received up to and including
the reply, plus the watch events the other connection received meanwhile
(collected with a cheap sync request). Only what differs by nature is
normalised: transaction ids (each daemon's own ids are tracked per slot) and
the generation number that starts a DIRECTORY_PART reply. A difference is
then looked up by name in ``fuzz.divergences.KNOWN``; anything else is
*unexplained*.

Two modes:

* ``campaign(ops, against, seed)``: seeded hypothesis generation only, no
  shrinking, counts divergences by name (``python -m fuzz diff --ops N``);
* ``find_divergence(against, examples)``: hypothesis generates and *shrinks*
  until an unexplained divergence is minimal, then reports it
  (``python -m fuzz diff --find``).
"""

from __future__ import annotations

import functools
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from fuzz.divergences import KNOWN, Known, Result, classify, unsafe
from fuzz.strategies import FUZZ_ROOT, mangle, op_payloads
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, Packet

REPO = Path(__file__).resolve().parents[1]
GUEST = 5
#: A tx id no daemon hands out in a run (C and pyxenstored count up from 1).
UNKNOWN_TX = 0x7EADBEEF
CLOSED = (-1, b"closed")
TIMEOUT = (-2, b"timeout")
SYNC = Packet(int(Op.GET_DOMAIN_PATH), 0xFFFF0000, 0, b"0\0")
#: Sent before each example to bring both daemons back to the same tree.
RESET_SEQUENCE = (
    (Op.RM, f"{FUZZ_ROOT}\0".encode()),
    (Op.RM, b"/local\0"),
    (Op.RELEASE, f"{GUEST}\0".encode()),
    (Op.SET_PERMS, b"/\0n0\0"),
    (Op.MKDIR, b"/tool/xenstored\0"),
    (Op.SET_PERMS, b"/tool\0n0\0"),
    (Op.SET_PERMS, b"/tool/xenstored\0n0\0"),
    (Op.SET_PERMS, b"@introduceDomain\0n0\0"),
    (Op.MKDIR, f"{FUZZ_ROOT}\0".encode()),
)


@dataclass(frozen=True)
class Step:
    """One request: which connection, type, payload and which transaction.

    ``tx`` is ``None`` for no transaction, ``-1`` for an id nobody handed
    out, or ``k >= 0`` for the k-th (mod count) open transaction of that
    connection on each daemon (0 if it has none).
    """

    conn: int
    op: int
    payload: bytes
    tx: int | None = None

    def __repr__(self) -> str:
        name = Op(self.op).name if 0 <= self.op < 27 else str(self.op)
        tx = "" if self.tx is None else f", tx={self.tx}"
        payload = self.payload
        shown = repr(payload) if len(payload) <= 160 else (
            f"{payload[:60]!r}...<{len(payload)} bytes>...{payload[-40:]!r}")
        return f"Step({self.conn}, {name}, {shown}{tx})"


#: Type -1: a header announcing 4097 bytes; the daemon must close the connection.
OVERSIZE = -1
DIFF_OPS = [int(o) for o in Op if o not in (Op.WATCH_EVENT, Op.ERROR)]
_WEIGHTED = (
    [Op.WRITE] * 6 + [Op.READ] * 3 + [Op.MKDIR] * 3 + [Op.RM] * 4 + [Op.DIRECTORY] * 3
    + [Op.WATCH] * 3 + [Op.UNWATCH] * 2 + [Op.TRANSACTION_START] * 3
    + [Op.TRANSACTION_END] * 3 + [Op.SET_PERMS] * 3 + [Op.GET_PERMS] * 2
    + [Op.DIRECTORY_PART] * 2
)


@functools.cache
def _payloads(op: int) -> st.SearchStrategy[bytes]:
    return st.one_of(op_payloads(op, small=True), mangle(op_payloads(op, small=True)))


_TX = st.one_of(st.none(), st.none(), st.integers(0, 3), st.just(-1))


@st.composite
def steps(draw: st.DrawFn) -> Step:
    kind = draw(st.integers(0, 99))
    if kind == 0:
        return Step(draw(st.integers(0, 1)), OVERSIZE, b"")
    if kind < 60:
        op = int(draw(st.sampled_from(_WEIGHTED)))
    else:
        op = draw(st.sampled_from([*DIFF_OPS, 15, 16, 20, 27, 0xFFFF]))
    payload = draw(_payloads(op))
    tx = draw(_TX)
    if op == Op.TRANSACTION_END and tx is None:
        tx = draw(st.sampled_from([0, 0, 0, None]))
    return Step(draw(st.integers(0, 1)), op, payload, tx)


def sequences(max_size: int = 40, min_size: int = 1) -> st.SearchStrategy[list[Step]]:
    return st.lists(steps(), min_size=min_size, max_size=max_size)


# ------------------------------------------------------------------ transport


class Wire:
    """A blocking dom0 socket connection with its own read buffer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buf = b""
        self.connect()

    def connect(self) -> None:
        self.close()
        deadline = time.monotonic() + 10
        while True:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            try:
                s.connect(str(self.path))
                break
            except (BlockingIOError, ConnectionRefusedError):
                # The listen backlog is full: the daemon has not accepted yet.
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        self.sock, self.buf = s, b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _read_packet(self) -> tuple[int, int, int, bytes] | None:
        assert self.sock is not None
        while True:
            if len(self.buf) >= HEADER.size:
                t, r, x, n = HEADER.unpack_from(self.buf)
                if len(self.buf) >= HEADER.size + n:
                    payload = self.buf[HEADER.size : HEADER.size + n]
                    self.buf = self.buf[HEADER.size + n :]
                    return t, r, x, payload
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionError):
                return None
            if not data:
                return None
            self.buf += data

    def exchange(self, raw: bytes, req_id: int) -> tuple[list[tuple[int, bytes]], bool]:
        """Send ``raw``; collect packets until the reply to ``req_id``.

        Returns (packets, alive). A closed connection ends the list with CLOSED.
        """
        assert self.sock is not None
        try:
            self.sock.sendall(raw)
        except OSError:
            return [CLOSED], False
        out: list[tuple[int, bytes]] = []
        while True:
            pkt = self._read_packet()
            if pkt is None:
                out.append(CLOSED)
                return out, False
            t, r, _x, payload = pkt
            out.append((t, payload))
            if t != Op.WATCH_EVENT and r == req_id:
                return out, True


class Side:
    """One daemon as the differential driver sees it: two connections and
    each connection's open transaction ids, in start order."""

    def __init__(self, name: str, socket_path: Path, conns: int = 2) -> None:
        self.name = name
        #: Steps not sent because the reference cannot take them, by name.
        self.skipped: Counter[str] = Counter()
        self.wires = [Wire(socket_path) for _ in range(conns)]
        self.txs: list[list[int]] = [[] for _ in range(conns)]

    def reconnect(self, i: int) -> None:
        self.wires[i].connect()
        self.txs[i] = []

    def tx_id(self, step: Step) -> int:
        if step.tx is None:
            return 0
        if step.tx < 0:
            return UNKNOWN_TX
        open_txs = self.txs[step.conn]
        return open_txs[step.tx % len(open_txs)] if open_txs else 0

    def run(self, step: Step, req_id: int) -> Result:
        i = step.conn
        tx = self.tx_id(step)
        if step.op == OVERSIZE:
            raw = HEADER.pack(Op.READ, req_id, 0, 4097) + b"/\0"
        else:
            raw = Packet(step.op, req_id, tx, step.payload).encode()
        main, alive = self.wires[i].exchange(raw, req_id)
        if not alive:
            self.reconnect(i)
        self._track(step, tx, main)
        others: list[tuple[int, bytes]] = []
        for j in range(len(self.wires)):
            if j != i:
                others.extend(self.sync(j))
        return normalise(main), normalise(others)

    def sync(self, j: int) -> list[tuple[int, bytes]]:
        got, alive = self.wires[j].exchange(SYNC.encode(), SYNC.req_id)
        if not alive:
            self.reconnect(j)
            return got
        return got[:-1]

    def _track(self, step: Step, tx: int, main: list[tuple[int, bytes]]) -> None:
        if not main or main[-1] == CLOSED:
            return
        rtype, payload = main[-1]
        txs = self.txs[step.conn]
        if step.op == Op.TRANSACTION_START and rtype == Op.TRANSACTION_START:
            txs.append(int(payload.rstrip(b"\0") or b"0"))
        elif step.op == Op.TRANSACTION_END and tx in txs:
            if rtype == Op.TRANSACTION_END or payload in (b"EAGAIN\0", b"ENOMEM\0", b"ENOENT\0"):
                txs.remove(tx)
        elif step.op == Op.RESET_WATCHES and rtype == Op.RESET_WATCHES:
            txs.clear()

    def reset(self) -> None:
        for i in range(len(self.wires)):
            self.reconnect(i)
        # Top-level nodes a sequence created outside /fz (e.g. a long path one
        # daemon accepted and the other refused) go too.
        listing, _ = self.wires[0].exchange(Packet(int(Op.DIRECTORY), 0xFFFD0000, 0,
                                                   b"/\0").encode(), 0xFFFD0000)
        if listing and listing[-1][0] == Op.DIRECTORY:
            for n, name in enumerate(listing[-1][1].split(b"\0")[:-1]):
                if name != b"tool":
                    self.wires[0].exchange(
                        Packet(int(Op.RM), 0xFFFC0000 + n, 0, b"/" + name + b"\0").encode(),
                        0xFFFC0000 + n)
        for n, (op, payload) in enumerate(RESET_SEQUENCE):
            self.wires[0].exchange(Packet(int(op), 0xFFFE0000 + n, 0, payload).encode(),
                                   0xFFFE0000 + n)
        for j in range(len(self.wires)):
            self.sync(j)

    def close(self) -> None:
        for w in self.wires:
            w.close()


def normalise(packets: list[tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    out = []
    for t, payload in packets:
        if t == Op.TRANSACTION_START and payload.rstrip(b"\0").isdigit():
            payload = b"<tx>\0"
        elif t == Op.DIRECTORY_PART and b"\0" in payload:
            payload = b"<gen>" + payload[payload.index(b"\0"):]
        out.append((t, payload))
    return tuple(out)


# ------------------------------------------------------------------- daemons


def _support() -> object:
    sys.path.insert(0, str(REPO / "tests" / "fakexen"))
    import fakexen_support

    return fakexen_support


@contextmanager
def daemon_pair(against: str, workdir: Path | None = None) -> Iterator[tuple[Side, Side]]:
    """(reference, pyxenstored) Sides, each daemon on its own stand-in, with
    domain 5 existing (running, ring page and an unbound port) in both."""
    fxs = _support()
    fxs.build_library()  # type: ignore[attr-defined]
    start_ref = {"c": fxs.start_c_xenstored, "ocaml": fxs.start_oxenstored}[against]  # type: ignore[attr-defined]
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fzd")) if workdir is None else workdir
    daemons = []
    keep = []
    try:
        sides = []
        for kind, start in (("ref", start_ref), ("py", fxs.start_pyxenstored)):  # type: ignore[attr-defined]
            fx = fxs.FakeXen(root / f"{kind}fx")  # type: ignore[attr-defined]
            fx.set_domain(GUEST, "running")
            fx.create_ring(GUEST)
            keep.append(fxs.allocate_unbound_port(fx.evtchn, GUEST)[0])  # type: ignore[attr-defined]
            daemon = start(fx, root / f"{kind}run")
            daemons.append(daemon)
            sides.append(Side(against if kind == "ref" else "py", daemon.socket_path))
        yield sides[0], sides[1]
        for d in daemons:
            if d.proc.poll() is not None:
                raise RuntimeError(f"{d.argv[0]} died with status {d.proc.returncode}")
    finally:
        for d in daemons:
            d.stop()
        for s in keep:
            s.close()
        if own:
            shutil.rmtree(root, ignore_errors=True)


# -------------------------------------------------------------------- runner


@dataclass
class Divergence:
    index: int
    step: Step
    ref: Result
    py: Result
    known: Known | None

    def describe(self, ref_name: str) -> str:
        name = self.known.name if self.known else "UNEXPLAINED"
        return (f"[{name}] step {self.index}: {self.step!r}\n"
                f"    {ref_name}: {self.ref}\n    py: {self.py}")


@dataclass
class Tally:
    ops: int = 0
    examples: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, div: Divergence, ref_name: str, sequence: list[Step]) -> None:
        name = div.known.name if div.known else "UNEXPLAINED"
        self.counts[name] += 1
        key = name
        if div.known is None:
            first = (div.step.op, div.ref[0][-1:], div.py[0][-1:])
            key = f"{name} {first}"
        kept = self.samples.setdefault(key, [])
        if len(kept) < 1:
            prefix = "\n".join(f"      {s!r}" for s in sequence[: div.index])
            kept.append(div.describe(ref_name) + ("\n    after:\n" + prefix if prefix else ""))


def run_sequence(ref: Side, py: Side, sequence: list[Step]) -> tuple[int, list[Divergence]]:
    """Reset both, run ``sequence`` on both; stop at the first divergence that
    is unexplained or leaves the daemons in different states."""
    ref.reset()
    py.reset()
    found: list[Divergence] = []
    ran = 0
    for index, step in enumerate(sequence):
        req_id = index + 1
        bad = unsafe(step, ref.name)
        if bad is not None:
            ref.skipped[bad.name] += 1
            continue
        a = ref.run(step, req_id)
        b = py.run(step, req_id)
        ran += 1
        if a != b:
            known = classify(step, a, b)
            found.append(Divergence(index, step, a, b, known))
            if known is None or not known.stateless:
                break
    else:
        for j in range(len(ref.wires)):
            a2 = normalise(ref.sync(j))
            b2 = normalise(py.sync(j))
            if a2 != b2:
                final = Step(j, int(Op.GET_DOMAIN_PATH), b"0\0")
                found.append(Divergence(len(sequence), final, (a2, ()), (b2, ()),
                                        classify(final, (a2, ()), (b2, ()))))
                break
    return ran, found


_SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def campaign(ops: int, against: str = "c", seed: int = 0, length: int = 50,
             verbose: bool = True) -> Tally:
    """Run at least ``ops`` generated steps; count divergences by name."""
    tally = Tally()
    t0 = time.monotonic()
    with daemon_pair(against) as (ref, py):
        batch = 0
        while tally.ops < ops:
            remaining = max(1, (ops - tally.ops + length - 1) // length)

            @settings(max_examples=min(remaining, 100), phases=[Phase.generate], **_SETTINGS)
            @hseed(seed * 1_000_003 + batch)
            @given(sequences(max_size=length, min_size=length))
            def prop(sequence: list[Step]) -> None:
                if tally.ops >= ops:
                    return
                ran, divs = run_sequence(ref, py, sequence)
                tally.ops += ran
                tally.examples += 1
                for d in divs:
                    tally.add(d, ref.name, sequence)

            prop()
            batch += 1
            if verbose:
                rate = tally.ops / (time.monotonic() - t0)
                tally.skipped = ref.skipped
                print(f"  {tally.ops} ops, {tally.examples} sequences, {rate:.0f} ops/s, "
                      f"divergences {dict(tally.counts)}", flush=True)
    return tally


def find_divergence(against: str = "c", examples: int = 200, seed: int | None = None,
                    stateless_too: bool = False) -> list[str]:
    """Hypothesis search with shrinking; returns the minimal failing report
    (empty if nothing unexplained was found)."""
    report: list[str] = []
    with daemon_pair(against) as (ref, py):

        @settings(max_examples=examples, **_SETTINGS)
        @given(sequences())
        def prop(sequence: list[Step]) -> None:
            _ran, divs = run_sequence(ref, py, sequence)
            bad = [d for d in divs if d.known is None]
            if bad:
                report[:] = [f"{s!r}" for s in sequence[: bad[0].index + 1]]
                report.append(bad[0].describe(ref.name))
                raise AssertionError(bad[0].describe(ref.name))

        if seed is not None:
            prop = hseed(seed)(prop)
        try:
            prop()
        except AssertionError:
            return report
    return []


__all__ = ["KNOWN", "Step", "campaign", "daemon_pair", "find_divergence", "run_sequence"]
