"""The live-update drill's latency timeline as a picture (``--plot FILE``).

``FILE.html`` (the default kind) is one self-contained page: an inline SVG
of request latency against time (per time slice, the median and the
maximum latency of the requests sent in it, on a log scale), every live
update marked (a shaded band from the start of ``xenstore-control`` to its
exit, and a line where it started), a second SVG with each update's pause,
and the drill's summary table. ``FILE.svg`` is the timeline alone. No
dependency: the SVG is written by hand. ``FILE.png`` uses matplotlib if it
happens to be installed (it is not a dependency of the project); without
it the HTML page is written next to it instead.
"""

from __future__ import annotations

import html
import importlib
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Drawing area and margins of the timeline, in pixels.
HEIGHT = 320
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 40
#: Pixels per second of the run (bounded both ways).
PX_PER_SECOND = 40
MIN_WIDTH, MAX_WIDTH = 900, 24000
#: Each polyline point covers this many pixels.
SLICE_PX = 2


@dataclass
class UpdateMark:
    """One update, in seconds since the start of the load."""

    index: int
    start: float
    end: float
    pause: float
    control: float


@dataclass
class Plot:
    title: str
    #: (send time since the start of the load, latency), seconds.
    points: Sequence[tuple[float, float]]
    updates: Sequence[UpdateMark]
    summary: str = ""


def _log_range(values: Sequence[float]) -> tuple[float, float]:
    positive = [v for v in values if v > 0]
    low = min(positive, default=1e-4)
    high = max(positive, default=1.0)
    lo = 10 ** math.floor(math.log10(max(low, 1e-6)))
    hi = 10 ** math.ceil(math.log10(max(high, lo * 10)))
    return lo, hi


def _duration(label_seconds: float) -> str:
    if label_seconds == 0:
        return "0"
    if label_seconds >= 1:
        return f"{label_seconds:g} s"
    if label_seconds >= 1e-3:
        return f"{label_seconds * 1e3:g} ms"
    return f"{label_seconds * 1e6:g} µs"


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def timeline_svg(plot: Plot) -> str:
    """Latency against time, updates marked: one ``<svg>`` element."""
    points = plot.points
    t_end = max(
        [p[0] + p[1] for p in points] + [u.end for u in plot.updates] + [1.0]
    )
    width = int(min(MAX_WIDTH, max(MIN_WIDTH, t_end * PX_PER_SECOND))) + LEFT + RIGHT
    inner_w = width - LEFT - RIGHT
    lo, hi = _log_range([p[1] for p in points])

    def x(t: float) -> float:
        return LEFT + inner_w * t / t_end

    def y(latency: float) -> float:
        latency = min(max(latency, lo), hi)
        frac = (math.log10(latency) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return TOP + HEIGHT * (1 - frac)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{HEIGHT + TOP + BOTTOM}" font-family="sans-serif" font-size="11">',
        f'<text x="{LEFT}" y="18" font-size="13">{html.escape(plot.title)}</text>',
    ]
    for update in plot.updates:
        x0, x1 = x(update.start), x(update.end)
        tip = (
            f"update {update.index}: pause {update.pause * 1e3:.0f} ms, "
            f"xenstore-control {update.control * 1e3:.0f} ms"
        )
        out.append(
            f'<rect x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 1):.1f}" height="{HEIGHT}" '
            f'fill="#f4b6b6" opacity="0.6"><title>{html.escape(tip)}</title></rect>'
        )
        out.append(
            f'<line x1="{x0:.1f}" y1="{TOP}" x2="{x0:.1f}" y2="{TOP + HEIGHT}" '
            'stroke="#c0392b" stroke-width="0.7"/>'
        )
    # Axes and grid.
    decade = lo
    while decade <= hi * 1.0001:
        yy = y(decade)
        out.append(
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{width - RIGHT}" y2="{yy:.1f}" '
            'stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{_duration(decade)}</text>'
        )
        decade *= 10
    step = _nice_step(t_end, max(inner_w // 90, 2))
    tick = 0.0
    while tick <= t_end:
        xx = x(tick)
        out.append(
            f'<line x1="{xx:.1f}" y1="{TOP + HEIGHT}" x2="{xx:.1f}" y2="{TOP + HEIGHT + 4}" '
            'stroke="#333"/>'
        )
        out.append(
            f'<text x="{xx:.1f}" y="{TOP + HEIGHT + 16}" text-anchor="middle">{tick:g} s</text>'
        )
        tick += step
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{HEIGHT}" fill="none" '
        'stroke="#333"/>'
    )
    out.append(
        f'<text x="{LEFT + inner_w / 2}" y="{TOP + HEIGHT + 32}" text-anchor="middle">'
        "request sent at (s since the load started); latency on a log scale</text>"
    )
    # Per slice: the median and the maximum latency of the requests sent in it.
    slices: dict[int, list[float]] = {}
    span = t_end / max(inner_w / SLICE_PX, 1)
    for sent, latency in points:
        slices.setdefault(int(sent / span), []).append(latency)
    for name, colour, pick in (
        ("max", "#e67e22", max),
        ("median", "#2c6fbb", statistics.median),
    ):
        coords = " ".join(
            f"{x((k + 0.5) * span):.1f},{y(pick(values)):.1f}"
            for k, values in sorted(slices.items())
        )
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{coords}">'
            f"<title>{name} latency per {span * 1e3:.0f} ms slice</title></polyline>"
        )
    legend_x = width - RIGHT - 330
    out.append(
        f'<text x="{legend_x}" y="18"><tspan fill="#e67e22">━ max</tspan>  '
        f'<tspan fill="#2c6fbb">━ median</tspan>  latency per slice  '
        f'<tspan fill="#c0392b">▮ live update</tspan></text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def pauses_svg(updates: Sequence[UpdateMark]) -> str:
    """One bar per update: its pause."""
    width = max(MIN_WIDTH, 8 * len(updates)) + LEFT + RIGHT
    height = 200
    inner_w = width - LEFT - RIGHT
    top = max((u.pause for u in updates), default=0.0) or 1.0
    step = _nice_step(top, 4)
    top = step * math.ceil(top / step)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + TOP + BOTTOM}"'
        ' font-family="sans-serif" font-size="11">',
        f'<text x="{LEFT}" y="18" font-size="13">service pause of each live update</text>',
    ]
    tick = 0.0
    while tick <= top * 1.0001:
        yy = TOP + height * (1 - tick / top)
        out.append(
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{width - RIGHT}" y2="{yy:.1f}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{_duration(tick)}</text>'
        )
        tick += step
    bar = inner_w / max(len(updates), 1)
    for n, update in enumerate(updates):
        h = height * update.pause / top
        out.append(
            f'<rect x="{LEFT + n * bar + bar * 0.1:.1f}" y="{TOP + height - h:.1f}" '
            f'width="{bar * 0.8:.1f}" height="{h:.1f}" fill="#c0392b">'
            f"<title>update {update.index}: {update.pause * 1e3:.0f} ms</title></rect>"
        )
    out.append(
        f'<text x="{LEFT + inner_w / 2}" y="{TOP + height + 20}" text-anchor="middle">'
        f"update 1 .. {len(updates)}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def page(plot: Plot) -> str:
    summary = f"<pre>{html.escape(plot.summary)}</pre>" if plot.summary else ""
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(plot.title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em}div{overflow-x:auto}</style>"
        f"</head><body>\n<h2>{html.escape(plot.title)}</h2>\n"
        f"<div>{timeline_svg(plot)}</div>\n<div>{pauses_svg(plot.updates)}</div>\n"
        f"{summary}\n</body></html>\n"
    )


def write(plot: Plot, path: Path) -> Path:
    """Write the picture the suffix asks for; returns the file written."""
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(timeline_svg(plot) + "\n")
        return path
    if suffix == ".png":
        try:
            pyplot = importlib.import_module("matplotlib.pyplot")
        except ImportError:
            path = path.with_suffix(".html")  # no matplotlib: the page instead
        else:
            _png(pyplot, plot, path)
            return path
    path.write_text(page(plot))
    return path


def _png(plt: Any, plot: Plot, path: Path) -> None:
    """The same timeline drawn by matplotlib (only if it is installed)."""
    fig, axis = plt.subplots(figsize=(16, 5))
    if plot.points:
        sent, latency = zip(*plot.points, strict=True)
        axis.scatter(sent, latency, s=1, alpha=0.3, label="request latency")
    for n, update in enumerate(plot.updates):
        axis.axvspan(
            update.start, update.end, color="red", alpha=0.2, label="live update" if not n else None
        )
    axis.set_yscale("log")
    axis.set_xlabel("request sent at (s since the load started)")
    axis.set_ylabel("latency (s)")
    axis.set_title(plot.title)
    axis.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
