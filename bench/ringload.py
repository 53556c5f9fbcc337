"""Reads from a guest over its ring, on the stand-in hypervisor.

One simulated guest per daemon (``tests/fakexen/guest.py``: the ring page
``$FAKEXEN_DIR/dom<N>/ring`` mapped shared, an event channel that is a
datagram socket), introduced once by dom0 as ``bench/rings.py`` does it
(its home directory made and given to it, ``INTRODUCE``), writes its own
keys (``bench/k<i>`` under its home) and then reads them:

* **sequential**: one READ at a time over the ring (ops/s, p50, p99);
* **pipelined**: ``RING_DEPTH`` READs in flight (all of them fit in the
  1 KiB request ring, and their replies in the response ring), refilled as
  replies come; replies are taken from the ring in whole batches, with one
  notification per batch.

The guest's side is this process, in plain Python; its cost per request is
of the same order as a daemon's, so these figures are more the ring
protocol's round trips than the daemons' work, and are the noisiest of the
run.

Not part of the default run (``--only rings`` runs it): with the three
daemons running, C xenstored's ring now and then stops answering (both
rings' indices show every request consumed and every response taken, and
the reply never comes; its socket still answers), and oxenstored's now and
then skips a reply to pipelined requests. Alone, neither happens here. The
cause (the daemons, the stand-in, or this guest) has not been found; a
stalled ring fails the measurement after ``TIMEOUT`` seconds rather than
hanging the run.
"""

from __future__ import annotations

import importlib
import struct
import time
from typing import Any

from bench.targets import Running
from bench.workloads import HEADER, READ, WRITE, BenchError, Result, Wire, latency_rows
from drills import fakexen

MKDIR, INTRODUCE, SET_PERMS = 12, 8, 14
RING_SIZE = 1024
RSP_OFF = 1024
IDX_OFF = 2048
IDX = struct.Struct("=IIII")  # req_cons, req_prod, rsp_cons, rsp_prod
RING_DEPTH = 8
TIMEOUT = 10.0


class RingLoad:
    """A guest of one daemon, ready to read its keys."""

    def __init__(self, target: Running, domid: int, keys: int, value: bytes) -> None:
        if target.fakexen_dir is None:
            raise BenchError(f"{target.name} does not run on the stand-in")
        fakexen.helpers()  # puts tests/fakexen on sys.path
        guest_module: Any = importlib.import_module("guest")
        self.guest = guest_module.Guest(target.fakexen_dir, domid)
        self.keys = keys
        self.value = value
        home = b"/local/domain/%d" % domid
        dom0 = Wire(target.socket_path)
        try:
            dom0.call(MKDIR, home + b"\0")
            dom0.call(SET_PERMS, home + b"\0n%d\0" % domid)
            dom0.call(INTRODUCE, b"%d\0%d\0%d\0" % (domid, 0xFEFFF, self.guest.port))
        finally:
            dom0.close()
        self.buffer = bytearray()
        self.req_id = 0
        #: Kicks sent again because no reply came (see ``_wait``).
        self.rekicks = 0
        for i in range(keys):
            self.request(WRITE, b"bench/k%d\0" % i + value)
        self.reads = [b"bench/k%d\0" % i for i in range(keys)]

    def _wait(self, quiet_since: float) -> None:
        """Nothing on the response ring: wait for a kick. The stand-in now
        and then loses the guest's first kick after INTRODUCE, and the
        daemon then never looks at the request ring; after 0.1 s without a
        reply the guest kicks again (harmless if the first one arrived)."""
        idle = time.monotonic() - quiet_since
        if idle > TIMEOUT:
            raise BenchError(f"no reply over the ring for {TIMEOUT:g} s")
        if idle > 0.1 * (self.rekicks + 1):
            self.rekicks += 1
            self.guest.notify()
        self.guest.wait_event(0.02)

    def request(self, op: int, payload: bytes) -> bytes:
        """One request, its reply's payload (of type ``op``, or BenchError)."""
        self.req_id = (self.req_id + 1) & 0xFFFF_FFFF
        self.guest.write_req(HEADER.pack(op, self.req_id, 0, len(payload)) + payload)
        quiet_since = time.monotonic()
        buffer = self.buffer
        while True:
            if len(buffer) >= 16:
                type_, req_id, _tx, length = HEADER.unpack_from(buffer, 0)
                if len(buffer) >= 16 + length:
                    reply = bytes(buffer[16 : 16 + length])
                    del buffer[: 16 + length]
                    if type_ != op or req_id != self.req_id:
                        raise BenchError(f"ring request {op} {payload!r} answered "
                                         f"{type_} #{req_id}: {reply!r}")
                    return reply
            data = self._take()
            if data:
                buffer += data
            else:
                self._wait(quiet_since)

    def close(self) -> None:
        self.guest.close()

    # -- the raw response ring, a batch at a time

    def _take(self) -> bytes:
        page = self.guest.page
        _req_cons, _req_prod, cons, prod = IDX.unpack_from(page, IDX_OFF)
        avail = (prod - cons) & 0xFFFFFFFF
        if avail == 0:
            return b""
        if avail > RING_SIZE:
            raise BenchError(f"bad response indices {cons} {prod}")
        offset = cons % RING_SIZE
        first = min(avail, RING_SIZE - offset)
        data = page[RSP_OFF + offset : RSP_OFF + offset + first]
        if first < avail:
            data += page[RSP_OFF : RSP_OFF + avail - first]
        struct.pack_into("=I", page, IDX_OFF + 8, (cons + avail) & 0xFFFFFFFF)
        self.guest.notify()
        return data

    def sequential(self, seconds: float) -> Result:
        latencies: list[float] = []
        count = 0
        start = now = time.perf_counter()
        deadline = start + seconds
        while now < deadline:
            sent = now
            reply = self.request(READ, self.reads[count % self.keys])
            now = time.perf_counter()
            latencies.append(now - sent)
            count += 1
            if len(reply) != len(self.value):
                raise BenchError(f"ring READ returned {len(reply)} bytes")
        latencies.sort()
        return Result("ring: read sequential", "ops/s", count, now - start, {
            "p50_us": latencies[len(latencies) // 2] * 1e6,
            "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        })

    def pipelined(self, seconds: float, depth: int = RING_DEPTH) -> Result:
        requests = [HEADER.pack(READ, i, 0, len(p)) + p for i, p in enumerate(self.reads)]
        buffer = self.buffer
        sent = done = 0
        start = time.perf_counter()
        deadline = start + seconds
        self.guest.write_req(b"".join(requests[i % self.keys] for i in range(depth)))
        sent = depth
        writing = True
        quiet_since = time.monotonic()
        while done < sent:
            data = self._take()
            if not data:
                self._wait(quiet_since)
                continue
            quiet_since = time.monotonic()
            buffer += data
            offset, end, got = 0, len(buffer), 0
            while end - offset >= 16:
                type_, req_id, _tx, length = HEADER.unpack_from(buffer, offset)
                if end - offset - 16 < length:
                    break
                if type_ != READ or req_id != (done + got) % self.keys:
                    raise BenchError(f"ring reply {type_} #{req_id}, want #{done + got}")
                offset += 16 + length
                got += 1
            del buffer[:offset]
            done += got
            if writing and got:
                if time.perf_counter() >= deadline:
                    writing = False
                else:
                    self.guest.write_req(
                        b"".join(requests[(sent + i) % self.keys] for i in range(got))
                    )
                    sent += got
        elapsed = time.perf_counter() - start
        return Result(f"ring: read pipelined (depth {depth})", "ops/s", done, elapsed,
                      {"depth": depth, "rekicks": self.rekicks})


def ring_reads(target: Running, domid: int, keys: int, value: bytes,
               seconds: float) -> list[Result]:
    """Both measurements, with the target's guest (made on first use)."""
    load = target.extras.get("ring")
    if load is None:
        load = target.extras["ring"] = RingLoad(target, domid, keys, value)
    rows = latency_rows(load.sequential(seconds), "ring-seq-read")
    pipelined = load.pipelined(seconds)
    pipelined.key = "ring-pipe-read"
    return [*rows, pipelined]
