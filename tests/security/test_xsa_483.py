"""XSA-483 (CVE-2026-23556): oxenstored did not reset a domain's node count
when it died, so a new domain reusing the domid started with a reduced
quota (and the old domain's usage lingered).

Attack: a guest fills its node quota (and opens watches and transactions);
it dies (shutdown then dying, vanished, or RELEASE); the toolstack creates a
new domain with the same domid.

Expected (spec 3.6, 6.1): after the death the domid has no usage left (nodes,
memory, watches, transactions); the new domain's count is its home only
(CONTROL ``quota <domid>`` shows ``nodes: 1``), it can create exactly as
many nodes as the first one, and accounting equals a recount.

Layer: the pure engine.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness
from security_support import make_home

from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op

QUOTA = 15


def _fill(h: Harness, conn: int, prefix: str) -> int:
    count = 0
    while h.write(conn, f"{prefix}{count}", b"x" * 50)[0] == Op.WRITE:
        count += 1
        assert count < QUOTA * 2
    return count


def _control_nodes(h: Harness, domid: int) -> int:
    text = h.ok(h.dom0, Op.CONTROL, "quota", str(domid)).decode()
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() == "nodes":
            return int(rest.split()[0])
    raise AssertionError(text)


@pytest.mark.parametrize("death", ["dying", "vanished", "release"])
def test_node_count_reset_on_domid_reuse(h: Harness, death: str) -> None:
    h.ok(h.dom0, Op.SET_QUOTA, "nodes", str(QUOTA))  # the global default
    guest = make_home(h, 5)
    first = _fill(h, guest, "n")
    assert first == QUOTA - 2
    h.ok(guest, Op.WATCH, "n0", "w")
    h.start(guest)
    usage = h.engine.tree.accounting.of(5)
    assert (usage.nodes, usage.watches, usage.transactions) == (QUOTA - 1, 1, 1)
    if death == "release":
        h.ok(h.dom0, Op.RELEASE, "5")
    else:
        if death == "dying":
            h.engine.check_domains({5: DomainStatus(shutdown=True)})
            h.engine.check_domains({5: DomainStatus(dying=True)})
        h.engine.check_domains({})
    usage = h.engine.tree.accounting.of(5)
    assert (usage.nodes, usage.memory, usage.watches, usage.transactions) == (0, 0, 0, 0)
    again = make_home(h, 5)
    assert _control_nodes(h, 5) == 1
    assert _fill(h, again, "m") == first
    assert h.recount(5) == QUOTA - 1
    assert h.consistent() == []
