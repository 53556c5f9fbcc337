"""The live-update drill in miniature (``drills/liveupdate.py``, issue 6): five
live updates of pyxenstored through Xen's ``xenstore-control``, under load from
socket clients and a guest on a ring, with its checks; and the drill's
arithmetic (pauses, event sequences) and plot without a daemon.

``make drill-lu`` runs the long version (100 updates, 20 clients).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drills import latency, liveupdate, timeline


@pytest.fixture
def need_control(need_fakexen: None) -> None:
    if not liveupdate.XENSTORE_CONTROL.exists():
        pytest.skip(f"{liveupdate.XENSTORE_CONTROL} is not installed (xen-utils-4.17)")


def test_five_live_updates_lose_nothing(
    need_control: None, run_drill: Callable[..., tuple[Any, str]], tmp_path: Path
) -> None:
    summary, report = run_drill(
        liveupdate.run, liveupdate.LiveUpdateOptions, cycles=5, clients=4, guests=1,
        seed=20240601, min_interval=0.2, max_interval=0.5, plot=tmp_path / "timeline.html",
    )
    assert [u.returncode for u in summary.updates] == [0] * 5, report
    assert summary.requests_answered > 0 and summary.guest_requests_answered > 0, report
    assert summary.unexpected_errors == 0 and summary.wrong_values == 0, report
    assert summary.connections_dropped == 0, report
    assert summary.events_received > 0, report
    assert summary.events_lost == 0 and summary.events_duplicated == 0, report
    assert summary.events_unexpected == 0 and summary.events_out_of_order == 0, report
    assert summary.transactions_started == summary.transactions_committed > 0, report
    assert summary.transactions_across_update > 0, report
    assert summary.transactions_eagain == 0 and summary.transactions_failed == 0, report
    assert summary.nodes_checked > 0 and summary.store_mismatches == 0, report
    assert summary.ok, report
    assert all(0 < u.pause <= u.longest_wait for u in summary.updates), report
    page = (tmp_path / "timeline.html").read_text()
    assert page.count("<svg") == 2 and "update 5:" in page


# -- the arithmetic, without a daemon -----------------------------------------


def test_pause_is_the_longest_reply_gap_overlapping_the_update() -> None:
    t = latency.Timeline.empty()
    for k in range(10):  # one request every 0.1 s, answered in 0.01 s
        t.add(k * 0.1, k * 0.1 + 0.01)
    t.add(1.0, 1.5)  # sent at 1.0, stuck until 1.5 (the update runs 1.05-1.45)
    t.add(1.2, 1.5)
    t.add(1.5, 1.51)
    pauses = latency.Pauses(t)
    assert pauses.pause(1.05, 1.45) == pytest.approx(0.5)
    assert pauses.longest_wait(1.05, 1.45) == pytest.approx(0.5)
    assert pauses.pause(0.3, 0.35) == pytest.approx(0.01)  # a quiet moment: nothing owed
    outside = pauses.outside([(1.05, 1.45)])
    assert len(outside) == 11 and max(outside) == pytest.approx(0.01)
    assert latency.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert latency.percentile([], 99) is None


def test_events_exact_collapsed_lost_duplicated_reordered() -> None:
    expected = ["a", "b", "a", "c", "d", "e"]
    assert latency.check_events(expected, list(expected)).ok
    # The second "a" did not come: collapsed if the first was still unsent then.
    received = ["a", "b", "c", "d", "e"]
    collapsed = latency.check_events(expected, received, lambda j, k: True)
    assert collapsed.ok and collapsed.collapsed == 1
    lost = latency.check_events(expected, received, lambda j, k: False)
    assert (lost.lost, lost.collapsed) == (1, 0) and not lost.ok
    assert "#3" in lost.first_difference
    dup = latency.check_events(expected, ["a", "b", "a", "a", "c", "d", "e"])
    assert (dup.duplicated, dup.lost, dup.unexpected) == (1, 0, 0)
    odd = latency.check_events(expected, ["a", "b", "a", "c", "x", "d", "e"])
    assert (odd.unexpected, odd.lost) == (1, 0)
    swapped = latency.check_events(expected, ["a", "b", "a", "d", "c", "e"])
    assert swapped.out_of_order == 1 and swapped.lost == 0 and swapped.duplicated == 0
    assert not swapped.ok
    # Seen in a run: a burst of three writes, two of whose events collapse
    # into the events of the same keys still unsent, around a kept one.
    expected = ["k4", "k7", "k6", "k2", "k6", "k3", "k7", "k2", "t2", "t0", "t1"]
    received = ["k4", "k7", "k6", "k2", "k3", "k2", "t2", "t0", "t1"]
    burst = latency.check_events(expected, received, lambda j, k: True)
    assert burst.ok and burst.collapsed == 2
    # Never collapsed without an identical event received before it.
    first = latency.check_events(["a", "b"], ["b"], lambda j, k: True)
    assert first.lost == 1


def test_timeline_files(tmp_path: Path) -> None:
    plot = timeline.Plot(
        "t",
        [(0.01 * k, 0.001 if k % 50 else 0.3) for k in range(500)],
        [timeline.UpdateMark(1, 1.0, 1.3, 0.3, 0.3), timeline.UpdateMark(2, 3.0, 3.2, 0.2, 0.2)],
        "summary",
    )
    html = timeline.write(plot, tmp_path / "a.html")
    assert html.read_text().startswith("<!doctype html>")
    svg = timeline.write(plot, tmp_path / "a.svg")
    assert svg.read_text().startswith("<svg") and "update 2: pause 200 ms" in svg.read_text()
    png = timeline.write(plot, tmp_path / "a.png")  # the page, unless matplotlib is installed
    assert png.exists()
