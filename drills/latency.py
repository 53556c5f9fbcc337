"""The live-update drill's arithmetic: request timelines, pauses, event order.

Pure functions over plain numbers and lists, so they are tested without a
daemon (``tests/drills/test_live_update_drill.py``).

A **timeline** is every request's send and reply time (one clock). Around
one live update, whose ``xenstore-control`` ran from ``start`` to ``end``:

- the **pause** is the longest interval in which no reply arrived to
  anyone while at least one request was outstanding, among the intervals
  that overlap ``[start, end]``;
- the **longest wait** is the longest latency of a request that was
  outstanding at some moment in ``[start, end]``.

With a closed loop of clients (each waits for its reply before the next
request) the two are close; the pause does not count a request's own
queueing behind others once replies flow again.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Timeline:
    """Send and reply times of answered requests, in parallel lists."""

    sent: list[float]
    answered: list[float]

    @classmethod
    def empty(cls) -> Timeline:
        return cls([], [])

    def add(self, sent: float, answered: float) -> None:
        self.sent.append(sent)
        self.answered.append(answered)

    def __len__(self) -> int:
        return len(self.sent)


class Pauses:
    """Answers ``pause`` and ``longest_wait`` for any window of a timeline."""

    def __init__(self, timeline: Timeline) -> None:
        by_reply = sorted(zip(timeline.answered, timeline.sent, strict=True))
        self.replies = [r for r, _ in by_reply]
        # The earliest send among the requests answered at or after each reply.
        suffix: list[float] = [0.0] * len(by_reply)
        low = math.inf
        for k in range(len(by_reply) - 1, -1, -1):
            low = min(low, by_reply[k][1])
            suffix[k] = low
        #: Interval k: from ``starts[k]`` to ``replies[k]`` no reply came while
        #: a request was outstanding.
        self.starts = [
            max(self.replies[k - 1] if k else -math.inf, suffix[k]) for k in range(len(by_reply))
        ]
        by_send = sorted(zip(timeline.sent, timeline.answered, strict=True))
        self.sends = [s for s, _ in by_send]
        self.latencies = [a - s for s, a in by_send]
        self.max_latency = max(self.latencies, default=0.0)

    def pause(self, start: float, end: float) -> float:
        """Longest reply-less interval (with a request outstanding) overlapping the window."""
        best = 0.0
        k = bisect.bisect_left(self.replies, start)
        while k < len(self.replies) and self.starts[k] <= end:
            best = max(best, self.replies[k] - self.starts[k])
            k += 1
        return best

    def longest_wait(self, start: float, end: float) -> float:
        """Longest latency of a request outstanding at some moment in the window."""
        lo = bisect.bisect_left(self.sends, start - self.max_latency)
        hi = bisect.bisect_right(self.sends, end)
        best = 0.0
        for i in range(lo, hi):
            if self.sends[i] + self.latencies[i] >= start:
                best = max(best, self.latencies[i])
        return best

    def outside(self, windows: Sequence[tuple[float, float]]) -> list[float]:
        """Latencies of the requests that overlap none of the windows."""
        ordered = sorted(windows)
        starts = [w[0] for w in ordered]
        # The furthest end among windows starting at or before each one.
        reach: list[float] = []
        far = -math.inf
        for _, end in ordered:
            far = max(far, end)
            reach.append(far)
        out = []
        for sent, latency in zip(self.sends, self.latencies, strict=True):
            answered = sent + latency
            # Windows starting before the reply; the latest-reaching must end before the send.
            k = bisect.bisect_right(starts, answered)
            if k == 0 or reach[k - 1] < sent:
                out.append(latency)
        return out


@dataclass
class EventCheck:
    """One watch's events against what its writers' acknowledged requests imply."""

    expected: int
    received: int
    #: Expected events that never came, and could not have been collapsed.
    lost: int = 0
    #: Expected events that did not come because an identical event (same
    #: path and token) was still unsent when they fired: the daemon collapses
    #: those, as C does since XSA-326. Not a failure.
    collapsed: int = 0
    #: Events for an expected path that came more often than expected.
    duplicated: int = 0
    #: Events for a path no acknowledged request changed.
    unexpected: int = 0
    #: Events that came, but in another place than expected.
    out_of_order: int = 0
    #: The first difference (a collapse is none), for the report, and where
    #: in the received events it is.
    first_difference: str = ""
    first_index: int | None = None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.out_of_order)


#: How far the alignment looks for a place to resume after a difference,
#: and how many events must agree there.
LOOKAHEAD = 128
AGREE = 4


def _agree(a: Sequence[str], i: int, b: Sequence[str], k: int) -> bool:
    """Whether ``a`` from ``i`` and ``b`` from ``k`` agree for ``AGREE`` events
    (or up to both ends)."""
    if i > len(a) or k > len(b):
        return False
    n = min(AGREE, len(a) - i, len(b) - k)
    if n == 0:
        return i == len(a) and k == len(b)
    return all(a[i + m] == b[k + m] for m in range(n))


def _lcs_steps(
    a: Sequence[str], i0: int, i1: int, b: Sequence[str], k0: int, k1: int
) -> list[tuple[str, int, int]]:
    """Exact alignment of ``a[i0:i1]`` with ``b[k0:k1]`` (a longest common
    subsequence), matching the earliest copies: a collapsed event is a later one."""
    n, m = i1 - i0, k1 - k0
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        for k in range(m - 1, -1, -1):
            if a[i0 + i] == b[k0 + k]:
                row[k] = below[k + 1] + 1
            else:
                row[k] = max(below[k], row[k + 1])
    steps: list[tuple[str, int, int]] = []
    i = k = 0
    while i < n and k < m:
        if a[i0 + i] == b[k0 + k] and table[i][k] == table[i + 1][k + 1] + 1:
            steps.append(("match", i0 + i, k0 + k))
            i += 1
            k += 1
        elif table[i + 1][k] >= table[i][k + 1]:
            steps.append(("delete", i0 + i, -1))
            i += 1
        else:
            steps.append(("insert", -1, k0 + k))
            k += 1
    steps += [("delete", i0 + x, -1) for x in range(i, n)]
    steps += [("insert", -1, k0 + x) for x in range(k, m)]
    return steps


def align(expected: Sequence[str], received: Sequence[str]) -> list[tuple[str, int, int]]:
    """Steps turning ``expected`` into ``received``: ``("match", j, k)``,
    ``("delete", j, -1)`` (expected event j did not come) and
    ``("insert", -1, k)`` (received event k was not expected).

    Two pointers while the sequences agree; at a difference, the nearest
    place where they agree again for ``AGREE`` events (skipping as few
    events of both as possible, deletions first) closes a region, which is
    aligned exactly (``_lcs_steps``). Cheap when differences are rare and
    short, which is the only case that matters.
    """
    steps: list[tuple[str, int, int]] = []
    j = k = 0
    while j < len(expected) or k < len(received):
        if j < len(expected) and k < len(received) and expected[j] == received[k]:
            steps.append(("match", j, k))
            j += 1
            k += 1
            continue
        resume = next(
            (
                (j + d, k + total - d)
                for total in range(1, 2 * LOOKAHEAD)
                for d in range(min(total, LOOKAHEAD), -1, -1)
                if total - d <= LOOKAHEAD and _agree(expected, j + d, received, k + total - d)
            ),
            None,
        )
        if resume is None:  # no agreement nearby: align a window, go on from its end
            resume = (min(j + LOOKAHEAD, len(expected)), min(k + LOOKAHEAD, len(received)))
        steps += _lcs_steps(expected, j, resume[0], received, k, resume[1])
        j, k = resume
    return steps


def check_events(
    expected: Sequence[str],
    received: Sequence[str],
    may_collapse: Callable[[int, int], bool] | None = None,
) -> EventCheck:
    """Compare the paths of one watch's events with the expected sequence.

    ``may_collapse(j, k)``: whether expected event j may have been collapsed
    into received event k (the latest received one with the same path
    before it), i.e. whether k can still have been unsent when j fired.
    Without it, nothing may be collapsed.
    """
    result = EventCheck(len(expected), len(received))
    if list(expected) == list(received):
        return result
    last_kept: dict[str, int] = {}
    missing: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    first: tuple[int, str] | None = None
    cursor = 0  # where in ``received`` the current difference is
    for kind, j, k in align(expected, received):
        if kind == "match":
            last_kept[expected[j]] = k
            cursor = k + 1
            continue
        if kind == "delete":
            path = expected[j]
            kept = last_kept.get(path)
            if kept is not None and may_collapse is not None and may_collapse(j, kept):
                result.collapsed += 1
                continue
            missing[path] += 1
            if first is None:
                first = (cursor, f"expected event #{j + 1} ({path}) did not come")
        else:
            extra[received[k]] += 1
            cursor = k
            if first is None:
                first = (k, f"received event #{k + 1} ({received[k]}) was not expected there")
    moved = missing & extra
    result.out_of_order = sum(moved.values())
    result.lost = sum((missing - moved).values())
    want = set(expected)
    for path, n in (extra - moved).items():
        if path in want:
            result.duplicated += n
        else:
            result.unexpected += n
    if first is not None:
        result.first_index, result.first_difference = first
    return result
