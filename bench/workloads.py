"""The measurements, over raw Unix sockets (no client library in the way).

Each workload runs against a socket path for a bounded time and returns a
``Result``. The bench process is single-threaded and does little more than
pack headers, so the figures measure the daemon; they are still only
meaningful as ratios between targets measured in the same run.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER = struct.Struct("=IIII")
READ, WATCH, WRITE, MKDIR, ERROR, WATCH_EVENT = 2, 4, 11, 12, 16, 15
DIRECTORY, TRANSACTION_START, TRANSACTION_END, RM = 1, 6, 7, 13
#: Distinct nodes the fan-out writer cycles through (the store stays small).
FANOUT_KEYS = 256


class BenchError(Exception):
    """The daemon answered something a workload did not expect."""


@dataclass
class Result:
    """One measured figure: by default a rate (``count`` in ``seconds``);
    with ``value`` set, that value (a latency, a time, a size)."""

    name: str
    unit: str
    count: int
    seconds: float
    #: Extra figures (latency percentiles, parameters).
    details: dict[str, float] = field(default_factory=dict)
    #: The row this is a measurement of, across targets and repeats.
    key: str = ""
    value: float | None = None
    #: For times, latencies and sizes: smaller is better.
    lower_is_better: bool = False
    #: How repeats combine: "median", or "max" (see ``suite.Row``).
    aggregate: str = "median"

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def figure(self) -> float:
        return self.value if self.value is not None else self.rate


class Wire:
    """A blocking connection with a reply parser that tolerates any chunking."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Connect blocking: with a timeout set, a full listen backlog
        # (oxenstored's is short) fails with EAGAIN instead of waiting.
        self.sock.connect(path)
        self.sock.settimeout(timeout)
        self.buffer = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def messages(self) -> list[tuple[int, int, bytes]]:
        """Block for at least one whole message; return all complete ones."""
        out: list[tuple[int, int, bytes]] = []
        while not out:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise BenchError("daemon closed the connection")
            self.buffer += chunk
            out = parse(self.buffer)
        return out

    def call(self, op: int, payload: bytes, tx: int = 0) -> bytes:
        self.send(HEADER.pack(op, 0, tx, len(payload)) + payload)
        while True:
            for type_, _req, reply in self.messages():
                if type_ == WATCH_EVENT:
                    continue
                if type_ == ERROR:
                    raise BenchError(f"op {op} failed: {reply!r}")
                return reply


def parse(buffer: bytearray) -> list[tuple[int, int, bytes]]:
    """Remove every complete message from ``buffer``: (type, req_id, payload)."""
    out = []
    offset = 0
    end = len(buffer)
    while end - offset >= 16:
        type_, req_id, _tx, length = HEADER.unpack_from(buffer, offset)
        if end - offset - 16 < length:
            break
        out.append((type_, req_id, bytes(buffer[offset + 16 : offset + 16 + length])))
        offset += 16 + length
    del buffer[:offset]
    return out


def _request(op: int, req_id: int, payload: bytes) -> bytes:
    return HEADER.pack(op, req_id, 0, len(payload)) + payload


def _payloads(op: int, value: bytes, keys: int) -> list[bytes]:
    if op == READ:
        return [b"/bench/kv/%d\0" % (i % keys) for i in range(keys)]
    return [b"/bench/kv/%d\0" % (i % keys) + value for i in range(keys)]


def setup_keys(path: str, value: bytes, keys: int) -> None:
    wire = Wire(path)
    try:
        for i in range(keys):
            wire.call(WRITE, b"/bench/kv/%d\0" % i + value)
    finally:
        wire.close()


def sequential(path: str, op: int, value: bytes, keys: int, seconds: float) -> Result:
    """One request at a time: send, wait for the reply, repeat."""
    name = "read" if op == READ else "write"
    payloads = _payloads(op, value, keys)
    wire = Wire(path)
    latencies: list[float] = []
    count = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            sent = time.perf_counter()
            reply = wire.call(op, payloads[count % keys])
            now = time.perf_counter()
            latencies.append(now - sent)
            count += 1
            if op == READ and len(reply) != len(value):
                raise BenchError(f"READ returned {len(reply)} bytes")
        elapsed = now - start
    finally:
        wire.close()
    latencies.sort()
    return Result(
        f"{name} sequential",
        "ops/s",
        count,
        elapsed,
        {
            "p50_us": latencies[len(latencies) // 2] * 1e6,
            "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
            "mean_us": statistics.fmean(latencies) * 1e6,
        },
    )


class _Ring:
    """Requests ``i = 0, 1, ...`` (request id ``i % n``) as one prebuilt
    buffer, so that sending the next ``k`` of them is one slice."""

    def __init__(self, op: int, payloads: list[bytes], depth: int) -> None:
        self.n = len(payloads)
        requests = [_request(op, i, payload) for i, payload in enumerate(payloads)]
        extended = requests * (depth // self.n + 2)
        self.blob = b"".join(extended)
        self.offsets = [0]
        for request in extended:
            self.offsets.append(self.offsets[-1] + len(request))

    def take(self, first: int, count: int) -> bytes:
        start = first % self.n
        return self.blob[self.offsets[start] : self.offsets[start + count]]


def _count_replies(buffer: bytearray, op: int, first: int, n: int) -> int:
    """Consume the complete replies at the head of ``buffer``, checking that
    they answer requests ``first, first + 1, ...`` (ids modulo ``n``) in order,
    without copying their payloads; returns how many there were."""
    offset = 0
    end = len(buffer)
    got = 0
    unpack = HEADER.unpack_from
    while end - offset >= 16:
        type_, req_id, _tx, length = unpack(buffer, offset)
        if end - offset - 16 < length:
            break
        if type_ != op or req_id != (first + got) % n:
            payload = bytes(buffer[offset + 16 : offset + 16 + min(length, 60)])
            raise BenchError(
                f"unexpected reply {type_} #{req_id} (want #{(first + got) % n}): {payload!r}"
            )
        offset += 16 + length
        got += 1
    del buffer[:offset]
    return got


def pipelined(path: str, op: int, value: bytes, keys: int, seconds: float, depth: int) -> Result:
    """Keep ``depth`` requests in flight; refill as replies arrive.

    The requests are prebuilt and the replies only counted (their headers
    checked), so that the client costs far less than the daemon; the
    client's own CPU share is in ``details["client_cpu"]``."""
    name = "read" if op == READ else "write"
    ring = _Ring(op, _payloads(op, value, keys), depth)
    wire = Wire(path)
    sock = wire.sock
    buffer = wire.buffer
    sent = done = 0
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        sock.sendall(ring.take(0, depth))
        sent = depth
        writing = True
        while done < sent:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise BenchError("daemon closed the connection")
            buffer += chunk
            got = _count_replies(buffer, op, done, ring.n)
            done += got
            if writing and got:
                if time.perf_counter() >= deadline:
                    writing = False  # drain what is in flight: answered in time
                else:
                    sock.sendall(ring.take(sent, got))
                    sent += got
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        wire.close()
    return Result(
        f"{name} pipelined (depth {depth})", "ops/s", done, elapsed,
        {"depth": depth, "client_cpu": cpu / elapsed if elapsed else 0.0},
    )


def _scan(buffer: bytearray) -> tuple[int, int]:
    """Consume the complete messages at the head of ``buffer`` without
    copying them: (watch events, other messages). An error reply raises."""
    offset = 0
    end = len(buffer)
    events = others = 0
    unpack = HEADER.unpack_from
    while end - offset >= 16:
        type_, _req, _tx, length = unpack(buffer, offset)
        if end - offset - 16 < length:
            break
        if type_ == WATCH_EVENT:
            events += 1
        elif type_ == ERROR:
            raise BenchError(f"error reply: {bytes(buffer[offset + 16 : offset + 16 + length])!r}")
        else:
            others += 1
        offset += 16 + length
    del buffer[:offset]
    return events, others


def watch_fanout(path: str, watchers: int, seconds: float, depth: int = 1) -> Result:
    """``watchers`` connections watch /bench/fan; one writer writes under it.

    The writer keeps ``depth`` writes in flight. Counts watch events
    received (by all watchers together) per second, until every event for
    every write sent before the deadline has arrived.
    """
    setup = Wire(path)
    setup.call(MKDIR, b"/bench/fan\0")
    setup.close()
    selector = selectors.DefaultSelector()
    conns: list[Wire] = []
    try:
        for i in range(watchers):
            wire = Wire(path)
            payload = b"/bench/fan\0w%d\0" % i
            wire.send(HEADER.pack(WATCH, 0, 0, len(payload)) + payload)
            # Wait for both the OK and the immediate event (in either order).
            seen: set[int] = set()
            while seen != {WATCH, WATCH_EVENT}:
                for type_, _req, reply in wire.messages():
                    if type_ == ERROR:
                        raise BenchError(f"WATCH failed: {reply!r}")
                    seen.add(type_)
            wire.sock.setblocking(False)
            selector.register(wire.sock, selectors.EVENT_READ, wire)
            conns.append(wire)
        writer = Wire(path)
        events = 0
        writes_done = 0
        writes_sent = 0
        start = time.perf_counter()
        deadline = start + seconds
        writer.send(b"".join(_request(WRITE, i, b"/bench/fan/k%d\0v" % (i % FANOUT_KEYS))
                              for i in range(depth)))
        writes_sent = depth
        writer.sock.setblocking(False)
        selector.register(writer.sock, selectors.EVENT_READ, writer)
        stop_writing = False
        lost = 0
        last_event = start
        while not (
            stop_writing and writes_done == writes_sent and events >= writes_sent * watchers
        ):
            ready = selector.select(timeout=2 if stop_writing else 10)
            ready_any = bool(ready)
            for key, _mask in ready:
                wire = key.data
                try:
                    chunk = wire.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise BenchError("daemon closed a connection")
                wire.buffer += chunk
                got_events, got_replies = _scan(wire.buffer)
                if wire is writer:
                    writes_done += got_replies
                    if not stop_writing and time.perf_counter() >= deadline:
                        stop_writing = True
                    if not stop_writing and got_replies:
                        writer.sock.setblocking(True)
                        writer.send(
                            b"".join(
                                _request(
                                    WRITE,
                                    writes_sent + i,
                                    b"/bench/fan/k%d\0v" % ((writes_sent + i) % FANOUT_KEYS),
                                )
                                for i in range(got_replies)
                            )
                        )
                        writer.sock.setblocking(False)
                        writes_sent += got_replies
                else:
                    events += got_events
                    last_event = time.perf_counter()
            if stop_writing and writes_done == writes_sent and not ready_any:
                # Nothing arrived for a while: the daemon may legitimately
                # drop events (a slow reader's queue bound, duplicates), so
                # count what did arrive instead of waiting for ever.
                lost = writes_sent * watchers - events
                break
        elapsed = max(last_event, deadline) - start
        conns.append(writer)
    finally:
        selector.close()
        for wire in conns:
            wire.close()
    return Result(
        f"watch fan-out ({watchers} watchers)",
        "events/s",
        events,
        elapsed,
        {
            "watchers": watchers,
            "writes": writes_sent,
            "writes_per_s": writes_sent / elapsed,
            "events_lost": lost,
        },
    )


def latency_rows(result: Result, key: str) -> list[Result]:
    """A sequential result as table rows: the rate, then p50 and p99 (us)."""
    result.key = key
    rows = [result]
    for name in ("p50", "p99"):
        rows.append(
            Result(
                f"  latency {name}", "us", result.count, result.seconds,
                key=f"{key}.{name}", value=result.details[f"{name}_us"], lower_is_better=True,
            )
        )
    return rows


def transactions(path: str, seconds: float, writes: int = 10) -> Result:
    """One client, one transaction at a time: START, ``writes`` WRITEs in it,
    END (commit); transactions per second."""
    payloads = [b"/bench/tx/k%d\0value-%d" % (i, i) for i in range(writes)]
    wire = Wire(path)
    count = retries = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            tx = int(wire.call(TRANSACTION_START, b"\0").rstrip(b"\0"))
            for payload in payloads:
                wire.call(WRITE, payload, tx)
            try:
                wire.call(TRANSACTION_END, b"T\0", tx)
                count += 1
            except BenchError as exc:
                if "EAGAIN" not in str(exc):
                    raise
                retries += 1  # nobody else writes there: should not happen
            now = time.perf_counter()
    finally:
        wire.close()
    return Result(
        f"transactions of {writes} writes", "tx/s", count, now - start,
        {"writes": writes, "eagain": retries},
    )


def idle_connections(
    path: str, count: int, seconds: float, keys: int, value: bytes, rss_kib: Callable[[], int]
) -> list[Result]:
    """``count`` idle connections open (each has made one request, so the
    daemon has set it up): the daemon's RSS growth, and one more client's
    sequential READ rate and latency meanwhile."""
    before = rss_kib()
    conns: list[Wire] = []
    try:
        for _ in range(count):
            conns.append(Wire(path))
        probe = _request(READ, 1, b"/bench/kv/0\0")
        for wire in conns:
            wire.send(probe)
        for wire in conns:
            for type_, _req, reply in wire.messages():
                if type_ != READ:
                    raise BenchError(f"idle connection's READ answered {type_}: {reply!r}")
        grown = rss_kib() - before
        busy = sequential(path, READ, value, keys, seconds)
    finally:
        for wire in conns:
            wire.close()
    rows = latency_rows(busy, f"idle-{count}.read")
    rows[0].name = f"read sequential, {count:,} idle connections"
    return [
        Result(f"RSS growth with {count:,} idle connections (max)", "KiB", count, 0.0,
               key=f"idle-{count}.rss", value=float(grown), lower_is_better=True,
               aggregate="max"),
        *rows,
    ]
