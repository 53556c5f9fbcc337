"""A big store: write 120,000 nodes, walk all of them, and weigh the daemon.

The tree is ``bench persist``'s realistic one (``persist.store_leaves``:
guests' ``local/domain/<d>/...`` with vif and vbd front- and backends,
values of 10-50 bytes) placed under ``/bench/big``, which then holds
exactly ``nodes`` nodes (itself included; a write creates the missing
ancestors). Each time:

1. remove ``/bench/big`` (a previous repeat's), note the daemon's VmRSS;
2. **write** every leaf, 64 requests in flight (seconds);
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

from bench.persist import _prefixes, populate, store_leaves
from bench.workloads import (
    DIRECTORY,
    ERROR,
    READ,
    RM,
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


def walk(path: str, names: list[bytes], depth: int) -> tuple[float, int]:
    """READ and DIRECTORY of every node, ``depth`` requests in flight;
    (seconds, children listed)."""

    requests = []
    for name in names:
        requests.append((READ, name + b"\0"))
        requests.append((DIRECTORY, name + b"\0"))
    total = len(requests)
    wire = Wire(path, timeout=300.0)
    children = 0
    try:
        start = time.perf_counter()
        sent = min(depth, total)
        wire.send(b"".join(_request(op, i, payload) for i, (op, payload) in
                           enumerate(requests[:sent])))
        done = 0
        while done < total:
            replies = wire.messages()
            for type_, req_id, reply in replies:
                op, payload = requests[done]
                if type_ == ERROR or type_ != op or req_id != done:
                    raise BenchError(f"walk: {op} {payload!r} (#{done}) answered {type_} "
                                     f"#{req_id}: {reply[:60]!r}")
                if op == DIRECTORY:
                    children += reply.count(b"\0")
                done += 1
            more = min(len(replies), total - sent)
            if more:
                wire.send(b"".join(_request(requests[i][0], i, requests[i][1])
                                   for i in range(sent, sent + more)))
                sent += more
        return time.perf_counter() - start, children
    finally:
        wire.close()


def big_store(path: str, nodes: int, depth: int, rss_kib: Callable[[], int]) -> list[Result]:
    written, names = tree(nodes)
    remove(path)
    before = rss_kib()
    write_s = populate(path, written, depth)
    walk_s, children = walk(path, names, depth)
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
        Result("  RSS growth for the store", "MiB", nodes, 0.0,
               key=f"{key}.rss-growth", value=(after - before) / 1024, lower_is_better=True),
    ]
