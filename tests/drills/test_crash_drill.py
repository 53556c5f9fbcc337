"""The crash drill in miniature (``drills/crash.py``, issue 5): ten SIGKILLs of
pyxenstored under load from socket clients and guests on rings, each followed
by a restart on the same state directory and the drill's checks.

``make drill`` runs the long version (200 cycles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drills import crash, ledger
from pyxenstored.client import PendingReply
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet


def test_ten_kills_lose_nothing(
    need_fakexen: None, run_drill: Callable[..., tuple[Any, str]]
) -> None:
    summary, report = run_drill(
        crash.run, crash.DrillOptions, cycles=10, seed=20240501, guests=2, clients=2,
        workers=1, keys=4, groups=1, min_delay=0.05, max_delay=0.3,
    )
    assert summary.kills == 10, report
    assert summary.recoveries == 10, report
    assert len(summary.recovery_times) == 10, report
    assert summary.requests_acknowledged > 0, report
    assert summary.lost_writes == 0, report
    assert summary.half_applied == 0, report
    assert summary.missed_watch_events == 0, report
    # Deterministic failures of the checks the drill makes besides the three
    # counts: a traceback in the daemon's log, CONTROL check not OK.
    assert not [f for f in summary.findings if "traceback" in f or "CONTROL check" in f], report


# -- the ledger's judgement, without a daemon ----------------------------------


def _reply(kind: str, payload: bytes = b"OK\0") -> PendingReply:
    """A request's reply as the drill finds it: answered, refused, or not (yet)."""
    reply = PendingReply(Op.WRITE, 1, 0)
    if kind == "ok":
        reply._resolve(Packet(Op.WRITE, 1, 0, payload))
    elif kind == "error":
        reply._resolve(Packet(Op.ERROR, 1, 0, payload))
    elif kind == "closed":
        reply._fail("connection closed by the server", None)
    return reply  # "none": still pending


async def test_key_holds_last_acknowledged_or_later_in_flight() -> None:
    key = ledger.KeyLedger("/k")
    key.record("a", _reply("ok"))
    key.record("b", _reply("closed"))  # in flight when the daemon died
    key.record("c", _reply("none"))  # still in a guest's ring
    for observed in ("a", "b", "c"):
        probe = ledger.KeyLedger("/k", changes=list(key.changes))
        assert await probe.check(observed) == (None, 2)
    found, _ = await key.check(None)
    assert found is not None and found.kind == "lost"


async def test_refused_write_and_acknowledged_rm() -> None:
    key = ledger.KeyLedger("/k", baseline={"old"})
    key.record("new", _reply("error", b"EQUOTA\0"))
    assert (await key.check("new"))[0] is not None  # a refused write was applied
    key.record(None, _reply("error", b"ENOENT\0"))  # RM of a missing node: acknowledged
    found, _ = await key.check("new")
    assert found is not None and found.kind == "lost" and "RM" in found.text


async def test_group_half_applied_and_lost_commit() -> None:
    group = ledger.GroupLedger("/g")
    value = ledger.commit_value(1, "w", 1)
    group.record(1, value, _reply("ok"))
    findings, _ = await group.check("1", [value, value, value])
    assert findings == []
    other = ledger.commit_value(2, "w", 2)
    group.record(2, other, _reply("closed"))
    findings, in_flight = await group.check("2", [other, value, other])
    assert [f.kind for f in findings] == ["half-applied"] and in_flight == 1
    group = ledger.GroupLedger("/g", count=2, value=other)
    group.record(3, ledger.commit_value(3, "w", 3), _reply("ok"))
    findings, _ = await group.check("2", [other, other, other])
    assert [f.kind for f in findings] == ["lost"]
