"""A big store: write 120,000 nodes, walk all of them, and weigh the daemon.

The tree is ``bench persist``'s realistic one (``persist.store_leaves``:
guests' ``local/domain/<d>/...`` with vif and vbd front- and backends,
values of 10-50 bytes) placed under ``/bench/big``, which then holds
exactly ``nodes`` nodes (itself included; a write creates the missing
ancestors). Each time:

1. remove ``/bench/big`` (a previous repeat's), note the daemon's VmRSS;
2. **write** every leaf, 64 requests in flight (seconds; the requests are
   prebuilt and the replies' headers checked without copying them, so that
   the client costs little next to the daemon);
3. **walk**: a READ and a DIRECTORY of every node, 64 in flight (seconds);
   every one must succeed, and the directories must list exactly
   ``nodes - 1`` children in all;
4. the daemon's **VmRSS** (``/proc/<pid>/status`` of the daemon process
   itself) with the store in place, and its growth since step 1;
5. remove ``/bench/big`` again, so that the other workloads run on a
   small store.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.persist import _prefixes, store_leaves
from bench.workloads import (
    DIRECTORY,
    HEADER,
    READ,
    RM,
    WRITE,
    BenchError,
    Result,
    Wire,
    _request,
)

ROOT = "/bench/big"


def tree(nodes: int) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """The leaves to write, and every node of the tree (``ROOT`` first)."""
    leaves = store_leaves(nodes, {"/"})
    prefix = ROOT.encode()
    written = [(prefix + path, value) for path, value in leaves]
    every: dict[str, None] = {"/": None}
    for path, _value in leaves:
        every.update(dict.fromkeys(_prefixes(path.decode())))
    names = [ROOT.encode() if node == "/" else prefix + node.encode() for node in every]
    if len(names) != nodes:
        raise BenchError(f"the tree has {len(names)} nodes, not {nodes}")
    return written, names


def remove(path: str) -> None:
    wire = Wire(path, timeout=300.0)
    try:
        try:
            wire.call(RM, ROOT.encode() + b"\0")
        except BenchError as exc:
            if "ENOENT" not in str(exc):
                raise
    finally:
        wire.close()


def pipeline(path: str, requests: list[tuple[int, bytes]], depth: int) -> tuple[float, int]:
    """Send every ``(op, payload)``, ``depth`` in flight, prebuilt before the
    clock starts; every reply must be a success, in order. Returns the
    seconds taken and the number of names the DIRECTORY replies listed."""
    ops = [op for op, _payload in requests]
    encoded = [_request(op, i, payload) for i, (op, payload) in enumerate(requests)]
    blob = b"".join(encoded)
    offsets = [0]
    for request in encoded:
        offsets.append(offsets[-1] + len(request))
    total = len(requests)
    wire = Wire(path, timeout=300.0)
    sock, buffer = wire.sock, wire.buffer
    unpack = HEADER.unpack_from
    children = done = 0
    try:
        start = time.perf_counter()
        sent = min(depth, total)
        sock.sendall(blob[: offsets[sent]])
        while done < total:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise BenchError("the daemon closed the connection")
            buffer += chunk
            offset, end, got = 0, len(buffer), 0
            while end - offset >= 16:
                type_, req_id, _tx, length = unpack(buffer, offset)
                if end - offset - 16 < length:
                    break
                want = ops[done + got]
                if type_ != want or req_id != done + got:
                    body = bytes(buffer[offset + 16 : offset + 16 + min(length, 60)])
                    raise BenchError(f"request #{done + got} (op {want}): answered {type_} "
                                     f"#{req_id}: {body!r}")
                if type_ == DIRECTORY:
                    children += buffer.count(b"\0", offset + 16, offset + 16 + length)
                offset += 16 + length
                got += 1
            del buffer[:offset]
            done += got
            more = min(got, total - sent)
            if more:
                sock.sendall(blob[offsets[sent] : offsets[sent + more]])
                sent += more
        return time.perf_counter() - start, children
    finally:
        wire.close()


def big_store(path: str, nodes: int, depth: int, rss_kib: Callable[[], int]) -> list[Result]:
    written, names = tree(nodes)
    remove(path)
    before = rss_kib()
    write_s, _ = pipeline(path, [(WRITE, p + b"\0" + v) for p, v in written], depth)
    walk = [(op, name + b"\0") for name in names for op in (READ, DIRECTORY)]
    walk_s, children = pipeline(path, walk, depth)
    if children != nodes - 1:
        raise BenchError(f"the walk listed {children} children, not {nodes - 1}")
    after = rss_kib()
    remove(path)
    label = f"{nodes:,} nodes"
    key = f"big-{nodes}"
    return [
        Result(f"store of {label}: write (pipelined)", "s", len(written), write_s,
               key=f"{key}.write", value=write_s, lower_is_better=True),
        Result("  walk: READ + DIRECTORY of every node", "s", 2 * nodes, walk_s,
               key=f"{key}.walk", value=walk_s, lower_is_better=True),
        Result("  daemon RSS with the store", "MiB", nodes, 0.0,
               key=f"{key}.rss", value=after / 1024, lower_is_better=True),
        Result("  RSS growth for the store (max)", "MiB", nodes, 0.0,
               key=f"{key}.rss-growth", value=(after - before) / 1024, lower_is_better=True,
               aggregate="max"),
    ]
