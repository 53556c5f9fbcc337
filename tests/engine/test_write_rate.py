"""C xenstored's write-rate limit (XSA-206, spec 6.1).

The first part checks ``write_rate.py`` against C's integer arithmetic in
domain.c (``wrl_*``) with exact milli-credit numbers; the second what the
engine charges for, through the harness.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness

from pyxenstored.effects import LogMessage
from pyxenstored.engine.engine import nodes_written
from pyxenstored.engine.write_rate import CREDIT_MAX, DomainCredit, WriteRateLimit, xfer_credit
from pyxenstored.protocol.ops import Op

# ------------------------------------------------------------------ arithmetic


def test_xfer_moves_as_much_as_floor_and_ceiling_allow() -> None:
    assert xfer_credit(5000, 0, 0, 10000) == (0, 5000)
    assert xfer_credit(5000, 0, 8000, 10000) == (3000, 10000)
    assert xfer_credit(-20000, -50000, 0, 10000) == (-30000, 10000)
    # Already violated: nothing moves (never backwards).
    assert xfer_credit(-60000, -50000, 0, 10000) == (-60000, 0)
    assert xfer_credit(5000, 0, 12000, 10000) == (5000, 12000)


def test_defaults_are_cs() -> None:
    wrl = WriteRateLimit()
    assert (wrl.writecost, wrl.rate, wrl.dburst, wrl.gburst, wrl.newdoms_dburst) == (
        1000,
        200_000,
        10_000,
        1_000_000,
        50_000,
    )
    assert (wrl.reserve, wrl.transactions, wrl.last_warning, wrl.logevery) == (0, 0, 0, 120)


def test_new_domains_are_seeded_from_the_reserve_down_to_minus_50() -> None:
    wrl = WriteRateLimit()
    credits = [wrl.new_domain(domid, 1000).credit for domid in range(7)]
    assert credits == [10_000] * 5 + [0, 0]
    assert wrl.reserve == -50_000
    assert len(wrl.domains) == 7
    assert wrl.domains[3] == DomainCredit(10_000, 1000, False)


def test_a_known_domain_is_not_seeded_twice() -> None:
    wrl = WriteRateLimit()
    first = wrl.new_domain(5, 0)
    first.credit = -1000
    assert wrl.new_domain(5, 50) is first
    assert (first.credit, first.timestamp, wrl.reserve, len(wrl.domains)) == (-1000, 0, -10_000, 1)


def test_destroyed_domains_return_credit_up_to_one_burst() -> None:
    wrl = WriteRateLimit()
    for domid in range(3):
        wrl.new_domain(domid, 0)
    assert wrl.reserve == -30_000
    wrl.destroy_domain(1)
    assert (wrl.reserve, len(wrl.domains)) == (-20_000, 2)
    # The reserve takes no more than DBURST back.
    wrl.reserve = 4000
    wrl.destroy_domain(2)
    assert wrl.reserve == 10_000
    # A domain in debt returns nothing, an unknown one is ignored.
    wrl.domains[0].credit = -700
    wrl.destroy_domain(0)
    wrl.destroy_domain(42)
    assert (wrl.reserve, wrl.domains) == (10_000, {})


def test_refill_is_the_rate_shared_among_domains_in_whole_milli_credits() -> None:
    wrl = WriteRateLimit()
    a = wrl.new_domain(1, 0)
    b = wrl.new_domain(2, 0)
    wrl.new_domain(3, 0)
    assert wrl.reserve == -30_000
    a.credit = b.credit = -5000
    # 1 ms among 3 domains: 200000 / 3000 = 66.67, rounded down.
    wrl.update(a, 1)
    assert (a.credit, a.timestamp) == (-4934, 1)
    # 7 ms at once: 1400000 / 3000 = 466.
    wrl.update(b, 7)
    assert (b.credit, b.timestamp) == (-4534, 7)
    # The remainders are lost for good: seven 1 ms updates give 462.
    for now in range(2, 9):
        wrl.update(a, now)
    assert a.credit == -4934 + 7 * 66
    assert wrl.reserve == -30_000  # a negative reserve tops up nobody


def test_refill_stops_at_the_burst_and_the_surplus_fills_the_reserve() -> None:
    wrl = WriteRateLimit()
    a = wrl.new_domain(1, 0)
    a.credit = 9900
    wrl.reserve = 0
    assert wrl.update(a, 10) == 0  # 10 ms alone: +2000
    assert (a.credit, wrl.reserve) == (10_000, 1900)
    # The reserve stops at GBURST; what does not fit is discarded.
    wrl.reserve = 999_500
    assert wrl.update(a, 20) == 1500
    assert (a.credit, wrl.reserve) == (10_000, 1_000_000)


def test_the_reserve_tops_up_a_domain_in_debt() -> None:
    wrl = WriteRateLimit()
    a = wrl.new_domain(1, 0)
    a.credit = -2500
    wrl.reserve = 1800
    wrl.update(a, 0)
    assert (a.credit, wrl.reserve) == (-700, 0)
    wrl.reserve = 5000
    wrl.update(a, 0)
    assert (a.credit, wrl.reserve) == (0, 4300)


def test_long_gaps_and_clocks_going_back_saturate() -> None:
    wrl = WriteRateLimit()
    a = wrl.new_domain(1, 10**12)
    wrl.reserve = 0
    a.credit = -1000
    # C subtracts unsigned: going back counts as CREDIT_MAX milliseconds.
    wrl.update(a, 5)
    assert (a.credit, a.timestamp, wrl.reserve) == (10_000, 5, 1_000_000)
    a.credit = -1000
    wrl.reserve = 0
    wrl.update(a, 5 + 10**15)
    assert (a.credit, wrl.reserve) == (10_000, 1_000_000)
    assert CREDIT_MAX == 10**9


def test_no_time_passes_before_the_first_clock_reading() -> None:
    wrl = WriteRateLimit()
    a = wrl.new_domain(1, None)
    a.credit = -1000
    wrl.update(a, None)
    assert (a.credit, a.timestamp) == (-1000, None)
    wrl.update(a, 50_000)  # the first reading only stamps
    assert (a.credit, a.timestamp) == (-1000, 50_000)
    wrl.update(a, 50_001)
    assert a.credit == -800


@pytest.mark.parametrize(
    ("ndomains", "credit", "wakeup"),
    [(1, -1000, 5), (2, -1000, 10), (3, -1000, 15), (3, -1, 0), (7, -333, 11), (2, 0, None)],
)
def test_wakeup_is_cs_rounded_down(ndomains: int, credit: int, wakeup: int | None) -> None:
    wrl = WriteRateLimit()
    for domid in range(ndomains):
        wrl.new_domain(domid, 0)
    state = wrl.domains[0]
    state.credit = credit
    assert wrl.check_timeout(state, 0) == wakeup


def test_the_credit_is_back_to_zero_at_the_wakeup() -> None:
    wrl = WriteRateLimit()
    for domid in range(3):
        wrl.new_domain(domid, 0)
    state = wrl.domains[0]
    state.credit = -1000
    assert wrl.check_timeout(state, 0) == 15
    assert wrl.check_timeout(state, 15) is None  # 15 * 200000 / 3000 = 1000
    assert state.credit == 0
    # Looking in between loses the remainders: 933 at 14 ms, then 66.
    state.credit = -1000
    assert wrl.check_timeout(state, 29) == 1
    assert state.credit == -67
    assert wrl.check_timeout(state, 30) == 0
    assert state.credit == -1


def test_wait_is_at_least_a_millisecond_while_blocked() -> None:
    wrl = WriteRateLimit()
    for domid in range(3):
        wrl.new_domain(domid, 0)
    wrl.domains[0].credit = -1
    assert wrl.check_timeout(wrl.domains[0], 0) == 0
    assert wrl.wait(0, 0) == 1
    assert wrl.wait(0, 1) == 0  # +66
    assert wrl.wait(99, 1) == 0  # unknown domain: never limited


def test_wait_lets_idle_domains_surplus_reach_the_blocked_one() -> None:
    """C updates every domain on each pass of its main loop: an idle
    domain's share beyond its burst goes through the reserve to one in debt."""
    wrl = WriteRateLimit()
    idle = wrl.new_domain(1, 0)
    busy = wrl.new_domain(2, 0)
    wrl.reserve = 0
    busy.credit = -1000
    assert wrl.wait(2, 0) == 10
    # 5 ms: busy earns 500 of its own, idle's 500 overflow into the reserve.
    assert wrl.wait(2, 5) == 0
    assert (busy.credit, idle.credit, wrl.reserve) == (0, 10_000, 0)


def test_debit_and_its_log_lines() -> None:
    wrl = WriteRateLimit()
    wrl.new_domain(5, 1000)
    wrl.reserve = 0
    lines = [wrl.debit(5, 1000) for _ in range(11)]
    assert lines == [None] * 10 + ["domain 5 is affected"]
    assert (wrl.domains[5].credit, wrl.last_warning) == (-1000, 1)
    # Limited again while the warning is recent: nothing more is logged.
    assert wrl.debit(5, 1001) is None
    assert wrl.domains[5].credit == -1800  # +200 for 1 ms alone, -1000
    assert wrl.debit(5, 2000) is None
    assert wrl.domains[5].credit == 9000  # a second alone refills the burst
    assert wrl.last_warning == 1  # the second of the last limiting
    assert wrl.periodic(121_999) is None  # 120 s is not "more than 120"
    assert wrl.periodic(122_000) == "not in force recently"
    assert (wrl.last_warning, wrl.periodic(200_000)) == (0, None)
    wrl.domains[5].credit = 0
    assert wrl.debit(5, 200_000) is None  # credit was refilled meanwhile
    wrl.domains[5].credit = 0
    wrl.domains[5].timestamp = 200_000
    assert wrl.debit(5, 200_000) == "rate limiting restarts"
    # Another domain's first time is named even while limiting is recent.
    wrl.new_domain(6, 200_000)
    wrl.domains[6].credit = 0
    assert wrl.debit(6, 200_000) == "domain 6 is affected"


def test_debit_of_an_unknown_domain_seeds_it_first() -> None:
    wrl = WriteRateLimit()
    assert wrl.debit(7, 0) is None
    assert (wrl.domains[7].credit, wrl.reserve) == (9000, -10_000)


# ---------------------------------------------------------------- the engine


@pytest.mark.parametrize(
    ("op", "added", "written"),
    [
        (Op.WRITE, 0, 1),
        (Op.WRITE, 1, 2),
        (Op.WRITE, 3, 4),
        (Op.MKDIR, 0, 0),
        (Op.MKDIR, 2, 3),
        (Op.RM, 0, 0),
        (Op.RM, -1, 2),
        (Op.RM, -4, 5),
        (Op.SET_PERMS, 0, 1),
    ],
)
def test_nodes_written_as_c_accesses_them(op: int, added: int, written: int) -> None:
    assert nodes_written(op, added) == written


def _guest(h: Harness, domid: int = 5) -> int:
    h.write_ok(h.dom0, f"/local/domain/{domid}")
    h.ok(h.dom0, Op.SET_PERMS, f"/local/domain/{domid}", f"n{domid}")
    return h.introduce(domid)


def _credit(h: Harness, domid: int = 5) -> int:
    return h.engine.write_rate.domains[domid].credit


def test_engine_seeds_the_privileged_domain_and_introduced_guests(h: Harness) -> None:
    wrl = h.engine.write_rate
    assert list(wrl.domains) == [0]
    _guest(h, 5)
    _guest(h, 6)
    assert list(wrl.domains) == [0, 5, 6]
    assert wrl.reserve == -30_000
    h.introduce(5)  # again: not a new domain
    assert wrl.reserve == -30_000
    h.ok(h.dom0, Op.RELEASE, "5")
    assert list(wrl.domains) == [0, 6]
    assert wrl.reserve == -20_000


def test_writes_cost_nothing_without_open_transactions(h: Harness) -> None:
    guest = _guest(h)
    for i in range(30):
        h.write_ok(guest, f"data/{i}", b"x")
    assert _credit(h) == 10_000
    assert h.ring_readable(guest)


def test_each_node_written_costs_one_while_a_transaction_is_open(h: Harness) -> None:
    guest = _guest(h)
    h.write_ok(guest, "old", b"1")
    tx = h.start(h.dom0)
    assert h.engine.write_rate.transactions == 1
    h.write_ok(guest, "old", b"2")
    assert _credit(h) == 9000
    h.write_ok(guest, "a/b/c", b"x")  # c, b, a and the existing home
    assert _credit(h) == 5000
    h.ok(guest, Op.MKDIR, "a/b")  # exists: nothing written
    h.ok(guest, Op.RM, "missing")
    assert _credit(h) == 5000
    h.ok(guest, Op.SET_PERMS, "old", "n5")
    assert _credit(h) == 4000
    h.ok(guest, Op.RM, "a")  # a, b, c and the home's child list
    assert _credit(h) == 0
    assert h.ring_readable(guest)
    # Refusals write nothing and cost nothing.
    assert h.err(guest, Op.WRITE, "/local/domain/0/x") == "EACCES"
    assert _credit(h) == 0
    h.write_ok(guest, "old", b"3")
    assert _credit(h) == -1000
    assert not h.ring_readable(guest)
    assert LogMessage("write rate limit: domain 5 is affected") in h.engine.take_effects()
    assert h.end(h.dom0, tx) == "OK"
    assert h.engine.write_rate.transactions == 0


def test_sockets_and_the_privileged_domain_are_exempt(h: Harness) -> None:
    guest = _guest(h)
    tx = h.start(h.dom0)
    for i in range(30):
        h.write_ok(h.dom0, f"/local/domain/5/d{i}", b"x")
    assert _credit(h, 0) == 10_000
    assert _credit(h) == 10_000
    assert h.engine.write_credit_wait(h.dom0) == 0.0
    h.end(h.dom0, tx)
    assert h.ring_readable(guest)


def test_writes_inside_a_transaction_cost_only_the_commit(h: Harness) -> None:
    guest = _guest(h)
    dom0_tx = h.start(h.dom0)
    tx = h.start(guest)
    for i in range(20):
        h.write_ok(guest, f"t{i}", b"x", tx=tx)
    assert _credit(h) == 10_000
    assert h.end(guest, tx) == "OK"  # dom0's transaction is still open
    assert _credit(h) == 9000
    h.end(h.dom0, dom0_tx)
    tx = h.start(guest)
    h.write_ok(guest, "alone", b"x", tx=tx)
    assert h.end(guest, tx) == "OK"  # the only transaction: free
    tx = h.start(guest)
    assert h.read(guest, "t0", tx=tx) == b"x"
    h.write_ok(guest, "t0", b"y", tx=tx)
    other = h.start(h.dom0)
    h.write_ok(h.dom0, "/local/domain/5/t0", b"z")  # conflict, the read differs now
    assert h.end(guest, tx) == "EAGAIN"  # a failed commit (and replay) costs nothing
    assert h.end(h.dom0, other) == "OK"
    assert _credit(h) == 9000


def test_dropped_transactions_are_no_longer_counted(h: Harness) -> None:
    guest = _guest(h)
    h.start(guest)
    h.start(guest)
    h.start(h.dom0)
    assert h.engine.write_rate.transactions == 3
    h.ok(guest, Op.RESET_WATCHES)
    assert h.engine.write_rate.transactions == 1
    h.engine.disconnect(h.dom0)
    assert h.engine.write_rate.transactions == 0


def test_credit_comes_back_with_time(h: Harness) -> None:
    h.set_time(100.0)
    guest = _guest(h)
    h.write_ok(guest, "x")
    h.start(h.dom0)
    for i in range(11):
        h.write_ok(guest, "x", str(i).encode())
    assert _credit(h) == -1000
    # Two domains: 100 milli-credits a millisecond each, so 10 ms.
    assert h.engine.write_credit_wait(guest) == pytest.approx(0.010)
    h.set_time(100.004)
    assert h.engine.write_credit_wait(guest) == pytest.approx(0.006)
    h.set_time(100.010)
    assert h.ring_readable(guest)
    assert _credit(h) == 0


def test_the_log_says_when_limiting_has_stopped(h: Harness) -> None:
    h.set_time(10.0)
    guest = _guest(h)
    h.start(h.dom0)
    for i in range(11):
        h.write_ok(guest, "x", str(i).encode())
    effects = h.engine.take_effects()
    assert effects.count(LogMessage("write rate limit: domain 5 is affected")) == 1
    h.set_time(130.0)
    assert h.engine.take_effects() == []
    h.set_time(131.0)
    assert h.engine.take_effects() == [LogMessage("write rate limit: not in force recently")]
    for i in range(11):
        h.write_ok(guest, "x", str(i).encode())
    assert LogMessage("write rate limit: rate limiting restarts") in h.engine.take_effects()
