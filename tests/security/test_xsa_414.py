"""XSA-414 (CVE-2022-42309): C used a wrong pointer in the error path of node
creation when a quota was hit part-way through creating a path's missing
ancestors.

Attack: a guest with exactly k node-quota slots left creates a path needing
k + 1 new nodes (the last one fails), or needing exactly k; likewise with
the memory quota, and with a node-size refusal on an intermediate node,
directly and inside a transaction.

Expected: the refused request leaves no partial tree (not one of the new
ancestors exists), accounting equals a recount, the daemon carries on, and
the request needing exactly the remaining slots succeeds. Inside a
transaction, a quota refusal fails the transaction: commit answers ENOMEM
and installs nothing.

Layer: the pure engine.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness
from security_support import make_home

from pyxenstored.protocol.ops import Op

QUOTA = 20


@pytest.fixture
def guest(h: Harness) -> int:
    conn = make_home(h, 5)
    h.set_quota(5, "nodes", QUOTA)
    for i in range(QUOTA - 1 - 6):
        h.write_ok(conn, f"fill{i}")
    assert h.recount(5) == QUOTA - 6  # 5 more nodes allowed (count < quota)
    return conn


def _chain(levels: int, base: str = "deep") -> str:
    return "/".join([base] + [f"l{i}" for i in range(levels - 1)])


@pytest.mark.parametrize("op", [Op.WRITE, Op.MKDIR], ids=["WRITE", "MKDIR"])
def test_one_too_many_leaves_nothing(h: Harness, guest: int, op: int) -> None:
    payload = (_chain(6) + "\0").encode() + (b"v" if op == Op.WRITE else b"")
    assert h.raw(guest, op, payload) == (16, b"ENOSPC\0")
    assert h.err(guest, Op.READ, "deep") == "ENOENT"
    assert h.recount(5) == QUOTA - 6
    assert h.consistent() == []
    h.ok(guest, Op.MKDIR, _chain(5))  # exactly the 5 remaining
    assert h.recount(5) == QUOTA - 1
    assert h.write(guest, "one-more")[1] == b"ENOSPC\0"
    assert h.consistent() == []


def test_memory_quota_part_way(h: Harness, guest: int) -> None:
    usage = h.engine.tree.accounting.of(5).memory
    h.set_quota(5, "memory", usage + 300)
    long_names = "/".join(["m" * 60] * 4)  # 4 nodes, each path longer
    assert h.write(guest, long_names, b"v")[1] == b"ENOMEM\0"
    assert h.err(guest, Op.READ, "m" * 60) == "ENOENT"
    assert h.consistent() == []
    h.write_ok(guest, "m" * 20, b"fits")


def test_node_size_refusal_on_intermediate(h: Harness, guest: int) -> None:
    h.set_quota(5, "node-size", 200)
    # Each intermediate holds its child's name: a 190-byte name is too big
    # for the parent record, though each path component is valid.
    path = "a/" + "b" * 190 + "/c"
    assert h.write(guest, path)[1] == b"ENOSPC\0"
    assert h.err(guest, Op.READ, "a") == "ENOENT"
    assert h.consistent() == []


def test_in_transaction_fails_whole_transaction(h: Harness, guest: int) -> None:
    tx = h.start(guest)
    h.write_ok(guest, "tx-ok", b"v", tx=tx)  # 1 of the 5
    assert h.write(guest, _chain(5, "t"), tx=tx)[1] == b"ENOSPC\0"  # 1 + 5 > 5
    assert h.err(guest, Op.READ, "t", tx=tx) == "ENOENT"
    assert h.end(guest, tx) == "ENOMEM"
    assert h.err(guest, Op.READ, "tx-ok") == "ENOENT"
    assert h.recount(5) == QUOTA - 6
    assert h.consistent() == []
    # The connection and its transaction ids carry on.
    tx = h.start(guest)
    h.write_ok(guest, _chain(5, "t"), tx=tx)
    assert h.end(guest, tx) == "OK"
    assert h.recount(5) == QUOTA - 1
    assert h.consistent() == []
