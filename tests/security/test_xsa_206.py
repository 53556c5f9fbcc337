"""XSA-206 (no CVE): a guest's stream of writes starves dom0's transactions.

Attack: a guest writes to its own nodes as fast as it can while dom0 (the
toolstack) runs transactions. Every guest write that lands between a dom0
TRANSACTION_START and its commit can make the commit fail with EAGAIN, and
a guest writing faster than dom0's round trips makes dom0 retry forever.

Expected (spec 6.1 "Write rate limit", section 10): dom0's transactions
must eventually commit while a guest floods writes. C gets there by a
per-domain write-rate limit (the guest's ring is not read while its credit
is negative), O by conflict credit; either way within a bounded number of
retries.

Layer: the pure engine. The flood is modelled as the guest offering one
(or more) writes in between every two of dom0's requests, the worst case
for a transaction that has to read what the guest writes; each of dom0's
requests takes ``ROUND_TRIP`` of the engine's clock, the guest's none.
With the limit in force an offered write is handled only if the shell
would read the guest's ring now (``Harness.ring_readable``); otherwise it
stays in the ring, and the guest, waiting for its reply, offers no more
until the next gap. dom0 is given ``RETRIES`` attempts.

Result for pyxenstored: transactions that do not read the guest's nodes
commit at once (read-set validation has no false conflicts), even beside
an unlimited flood. A transaction that reads a node the guest keeps
rewriting commits within a few attempts: pyxenstored implements C's
write-rate limit, so once the guest has spent its burst (and what the
shared reserve lends it) its writes cost one credit each while any
transaction is open, it earns credit only at its share of 200 writes a
second, and its ring is not read while its credit is negative. Without the
limit (the flood handled regardless) dom0 would never commit.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness
from security_support import make_home

from pyxenstored.effects import LogMessage
from pyxenstored.protocol.ops import Op

RETRIES = 50
#: Seconds of the engine's clock per dom0 request (a generous round trip).
ROUND_TRIP = 0.001
#: The engine's clock when the flood starts (seconds).
START = 1000.0


class Flood:
    """The guest's side: ``writes`` pairs of writes offered at every gap."""

    def __init__(self, h: Harness, guest: int, writes: int, limited: bool) -> None:
        self.h = h
        self.guest = guest
        self.writes = writes
        self.limited = limited
        #: Writes handled so far.
        self.count = 0
        self.now = START

    def tick(self) -> None:
        """One dom0 request's worth of time."""
        self.now += ROUND_TRIP
        self.h.set_time(self.now)

    def _write(self, path: str, value: bytes) -> bool:
        if self.limited and not self.h.ring_readable(self.guest):
            return False
        self.h.write_ok(self.guest, path, value)
        self.count += 1
        return True

    def gap(self) -> None:
        for _ in range(self.writes):
            if not self._write("device/vif/0/state", str(self.count).encode()):
                return
            if not self._write(f"data/{self.count % 50}", b"x" * 100):
                return


def _toolstack_transaction(h: Harness, flood: Flood, reads_guest: bool) -> str:
    """One dom0 transaction of four requests, the guest flooding around each."""
    flood.tick()
    tx = h.start(h.dom0)
    flood.gap()
    flood.tick()
    if reads_guest:
        h.read(h.dom0, "/local/domain/5/device/vif/0/state", tx=tx)
    else:
        h.read(h.dom0, "/backend/vif/5/0/frontend", tx=tx)
    flood.gap()
    flood.tick()
    h.write_ok(h.dom0, "/backend/vif/5/0/state", b"4", tx=tx)
    flood.gap()
    flood.tick()
    return h.end(h.dom0, tx)


@pytest.fixture
def scene(h: Harness) -> tuple[Harness, int]:
    guest = make_home(h, 5)
    h.write_ok(guest, "device/vif/0/state", b"1")
    h.write_ok(h.dom0, "/backend/vif/5/0/frontend", b"/local/domain/5/device/vif/0")
    return h, guest


@pytest.mark.parametrize("writes", [1, 10])
def test_dom0_transactions_commit_beside_a_guest_flood(
    scene: tuple[Harness, int], writes: int
) -> None:
    """dom0's transactions over backend nodes commit on the first attempt,
    however hard the guest writes its own nodes meanwhile."""
    h, guest = scene
    flood = Flood(h, guest, writes, limited=False)
    for round_ in range(20):
        h.write_ok(h.dom0, "/backend/vif/5/0/state", str(round_).encode())
        assert _toolstack_transaction(h, flood, False) == "OK"
    assert h.read(h.dom0, "/backend/vif/5/0/state") == b"4"
    assert flood.count == 20 * 3 * 2 * writes
    assert h.consistent() == []


def _retry(h: Harness, flood: Flood) -> list[str]:
    results = []
    for _ in range(RETRIES):
        results.append(_toolstack_transaction(h, flood, True))
        if results[-1] == "OK":
            break
    return results


@pytest.mark.parametrize("writes", [1, 10])
def test_dom0_transaction_reading_guest_nodes_eventually_commits(
    scene: tuple[Harness, int], writes: int
) -> None:
    """The toolstack's transaction reads the guest's frontend state, which
    the guest keeps rewriting: it must still commit within RETRIES attempts."""
    h, guest = scene
    flood = Flood(h, guest, writes, limited=True)
    for round_ in range(20):
        results = _retry(h, flood)
        assert set(results[:-1]) <= {"EAGAIN"}
        assert results[-1] == "OK", f"no commit in {RETRIES} attempts: {results[-3:]}"
        assert h.read(h.dom0, "/backend/vif/5/0/state") == b"4"
        h.write_ok(h.dom0, "/backend/vif/5/0/state", str(round_).encode())
    # The guest was slowed down to about 200 writes a second (its burst, its
    # own share and what dom0's unused share lends through the reserve),
    # not stopped.
    elapsed = flood.now - START
    assert 10 < flood.count <= 10 + 200 * elapsed + 1
    effects = h.engine.take_effects()
    assert LogMessage("write rate limit: domain 5 is affected") in effects


def test_without_the_limit_dom0_never_commits(scene: tuple[Harness, int]) -> None:
    """The same flood handled whatever the guest's credit (what the limit
    prevents): every attempt fails."""
    h, guest = scene
    flood = Flood(h, guest, 1, limited=False)
    assert _retry(h, flood) == ["EAGAIN"] * RETRIES


def test_flooding_guest_transactions_do_not_block_dom0(scene: tuple[Harness, int]) -> None:
    """The guest floods with its own transactions too (each commit a write):
    dom0's plain writes and unrelated transactions are never refused."""
    h, guest = scene
    for i in range(100):
        tx = h.start(guest)
        h.write_ok(guest, "device/vif/0/state", str(i).encode(), tx=tx)
        assert h.end(guest, tx) == "OK"
        dom0_tx = h.start(h.dom0)
        h.write_ok(h.dom0, f"/backend/vif/5/0/n{i}", b"v", tx=dom0_tx)
        h.write_ok(guest, "data/x", str(i).encode())
        assert h.end(h.dom0, dom0_tx) == "OK"
    assert len(h.directory(h.dom0, "/backend/vif/5/0")) == 101  # frontend + n0..n99
    assert h.ok(h.dom0, Op.READ, "/local/domain/5/device/vif/0/state") == b"99"
