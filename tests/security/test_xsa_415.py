"""XSA-415 (CVE-2022-42310): a transaction that failed part-way through
creating nodes could still be committed, leaving orphaned nodes (a node
whose parent does not list it, or a listed child that does not exist).

Attack: guests and dom0 run random mixes of WRITE, MKDIR, RM and SET_PERMS,
in and out of transactions, under tight node, memory, node-size and
transaction-nodes quotas, so that requests fail part-way; then commit (or
abort) those transactions, interleaved with conflicting changes.

Expected: after every step the store invariant holds: every node's parent
exists and lists it, every listed child exists, and per-domain accounting
equals a recount (``check_tree`` reports nothing); a transaction that hit a
quota refusal never commits (ENOMEM), one that conflicts answers EAGAIN.

Layer: the pure engine, driven by a seeded random walk (reproducible).
"""

from __future__ import annotations

import random

import pytest
from engine_harness import ERROR, Harness
from security_support import make_home

from pyxenstored.protocol.ops import Op

NAMES = ["a", "b", "c", "dd", "e"]


def _path(rng: random.Random) -> str:
    return "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 5)))


@pytest.mark.parametrize("seed", range(6))
def test_random_transactions_keep_the_tree_sound(h: Harness, seed: int) -> None:
    rng = random.Random(seed)
    guests = {5: make_home(h, 5), 6: make_home(h, 6, 8)}
    for domid in guests:
        h.set_quota(domid, "nodes", 25)
        h.set_quota(domid, "transaction-nodes", 12)
        h.set_quota(domid, "node-size", 120)
    h.ok(h.dom0, Op.SET_PERMS, "/local/domain/6", "n6", "b5")  # 5 may write in 6's tree
    conns = [h.dom0, *guests.values()]
    open_tx: dict[int, list[tuple[int, bool]]] = {conn: [] for conn in conns}
    failed_commits = 0
    for step in range(700):
        conn = rng.choice(conns)
        txs = open_tx[conn]
        roll = rng.random()
        if roll < 0.08 and len(txs) < 3:
            txs.append((h.start(conn), False))
            continue
        if roll < 0.16 and txs:
            tx, hit_quota = txs.pop(rng.randrange(len(txs)))
            result = h.end(conn, tx, commit=rng.random() < 0.85)
            assert result in ("OK", "EAGAIN", "ENOMEM", "ENOSPC"), result
            if hit_quota:
                assert result in ("ENOMEM", "OK"), result  # OK only for an abort
            failed_commits += result != "OK"
        else:
            index = rng.randrange(len(txs) + 1)
            tx = txs[index][0] if index < len(txs) else 0
            base = rng.choice(["/local/domain/5/", "/local/domain/6/", "/pub/"])
            path = base + _path(rng)
            kind = rng.random()
            if kind < 0.5:
                value = b"v" * rng.choice([0, 10, 100])
                type_, reply = h.write(conn, path, value, tx=tx)
            elif kind < 0.65:
                type_, reply = h.request(conn, Op.MKDIR, path, tx=tx)
            elif kind < 0.9:
                type_, reply = h.request(conn, Op.RM, path, tx=tx)
            else:
                type_, reply = h.request(conn, Op.SET_PERMS, path, rng.choice(
                    ["n5", "n6", "b5", "r6", "n0"]), tx=tx)
            # A refusal after partial work fails the transaction (C marks it);
            # one made before writing anything leaves it usable (spec 4.1).
            newly_failed = (
                tx and not txs[index][1] and h.engine.connections[conn].transactions[tx].failed
            )
            if type_ == ERROR and newly_failed:
                assert reply in (b"ENOSPC\0", b"ENOMEM\0"), reply
                txs[index] = (tx, True)
        problems = h.consistent()
        assert problems == [], f"seed {seed} step {step}: {problems}"
    assert failed_commits > 0  # the walk did exercise failures
    for conn, txs in open_tx.items():
        for tx, _ in txs:
            h.end(conn, tx)
    assert h.consistent() == []
    assert h.result(h.dom0, Op.CONTROL, "check") == "OK"
