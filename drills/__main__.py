"""Command line: ``python -m drills crash --cycles N ...`` and
``python -m drills live-update --cycles N --clients M ...`` (also
``pyxenstored-drill``).

Exit status: 0 when every check passed; 1 when an acknowledged write was
lost, a transaction was half applied, a watch event was missed, or any
other check failed (the summary lists them); 2 when the drill cannot run
here (no gcc, no libxen-dev headers, no xenstore-control).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from drills import crash, fakexen, liveupdate

T = TypeVar("T", int, float)

EXAMPLES = """examples:
  python -m drills crash --cycles 200
  python -m drills crash --cycles 30 --seed 7 --guests 4 --clients 4 --durability fsync
  python -m drills crash --cycles 10 --json drill.json --keep
  python -m drills live-update --cycles 100 --clients 20
  python -m drills live-update --cycles 20 --clients 8 --guests 4 --seed 3 --plot lu.html
"""


def _at_least(convert: Callable[[str], T], minimum: T, why: str) -> Callable[[str], T]:
    """An argparse ``type``: ``convert``, refusing values below ``minimum``
    (named after the check, as argparse names it in its errors)."""

    def check(text: str) -> T:
        value = convert(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(why)
        return value

    return check


_positive = _at_least(int, 1, "must be at least 1")
_positive.__name__ = "_positive"
_count = _at_least(int, 0, "must not be negative")
_count.__name__ = "_count"
_seconds = _at_least(float, 0.0, "must not be negative")
_seconds.__name__ = "_seconds"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(
        prog="python -m drills" if script in ("__main__.py", "-c", "") else script,
        description="Fault-injection drills against pyxenstored.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="drill", required=True)
    c = sub.add_parser(
        "crash",
        help="SIGKILL pyxenstored under load, restart it, check nothing acknowledged was lost",
        description=(crash.__doc__ or "").split("\n\n")[0],
    )
    defaults = crash.DrillOptions()
    add_load_options(c, defaults, cycles="kill/restart cycles",
                     seed="seeds the kill delays and the load (default 0)")
    c.add_argument("--workers", type=_positive, default=defaults.workers,
                   help=f"concurrent workers per client and per guest (default {defaults.workers})")
    c.add_argument("--keys", type=_positive, default=defaults.keys,
                   help=f"keys per worker (default {defaults.keys})")
    c.add_argument("--value-size", type=_count, default=defaults.value_size, metavar="BYTES",
                   help="pad values to this size (at most 1500 for guests, 3900 for socket "
                   "clients): bigger values grow the journal faster, so kills also land during "
                   "compaction, and a guest's requests span more than its 1024-byte ring "
                   "(default: short values)")
    c.add_argument("--durability", choices=["write", "fsync"], default=defaults.durability,
                   help="the daemon's --durability (default write)")
    c.add_argument("--min-delay", type=float, default=defaults.min_delay,
                   help=f"earliest kill, seconds into the load (default {defaults.min_delay})")
    c.add_argument("--max-delay", type=float, default=defaults.max_delay,
                   help=f"latest kill, seconds into the load (default {defaults.max_delay})")
    add_run_options(
        c, defaults, timeout="seconds to wait for what must come after a restart",
        workdir="scratch directory (default: a new one under /tmp; keep it short, "
        "Unix socket paths are limited to 108 bytes)", kept="logs, journal")
    add_live_update(sub)
    args = parser.parse_args(argv)
    if args.clients + args.guests == 0:
        parser.error("need at least one guest or socket client")
    if args.drill == "crash" and not 0 <= args.min_delay <= args.max_delay:
        parser.error("need 0 <= --min-delay <= --max-delay")
    if args.drill == "live-update" and not 0 <= args.min_interval <= args.max_interval:
        parser.error("need 0 <= --min-interval <= --max-interval")
    return args


def add_load_options(p: argparse.ArgumentParser, defaults: Any, *, cycles: str,
                     seed: str) -> None:
    """--cycles, --seed, --guests, --clients: what both drills run, and on whom."""
    p.add_argument("--cycles", type=_positive, default=defaults.cycles,
                   help=f"{cycles} (default {defaults.cycles})")
    p.add_argument("--seed", type=int, default=defaults.seed, help=seed)
    p.add_argument("--guests", type=_count, default=defaults.guests,
                   help=f"simulated guests on rings (default {defaults.guests})")
    p.add_argument("--clients", type=_count, default=defaults.clients,
                   help=f"socket clients (default {defaults.clients})")


def add_run_options(p: argparse.ArgumentParser, defaults: Any, *, timeout: str, workdir: str,
                    kept: str) -> None:
    """--timeout, --workdir, --keep, --json, --no-progress: how both drills run
    and where their results go (the help words differ, the options do not)."""
    p.add_argument("--timeout", type=float, default=defaults.timeout,
                   help=f"{timeout} (default {defaults.timeout:g})")
    p.add_argument("--workdir", type=Path, default=None, help=workdir)
    p.add_argument("--keep", action="store_true",
                   help=f"keep the scratch directory ({kept}) even when all is well")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run_drill(name: str, drill: Any, options: Any, json_path: Path | None) -> int:
    """Run ``drill`` (``crash`` or ``liveupdate``), print its summary, write
    the JSON if asked; the exit status (see the module's docstring)."""
    try:
        summary = drill.run(options)
    except fakexen.Unavailable as exc:
        print(f"{name}: cannot run here: {exc}", file=sys.stderr)
        return 2
    print(summary.table())
    if json_path is not None:
        drill.write_json(summary, json_path)
    return 0 if summary.ok else 1


def add_live_update(sub: Any) -> None:
    lu = sub.add_parser(
        "live-update",
        help="live-update pyxenstored under load, over and over, check nothing was lost "
        "and measure the pause",
        description=(liveupdate.__doc__ or "").split("\n\n")[0],
    )
    defaults = liveupdate.LiveUpdateOptions()
    add_load_options(lu, defaults, cycles="live updates",
                     seed="seeds the update intervals and the load (default 0)")
    lu.add_argument("--dribblers", type=_count, default=defaults.dribblers,
                    help="raw socket connections sending each request in pieces, so that "
                    f"updates find partial packets (default {defaults.dribblers})")
    lu.add_argument("--keys", type=_positive, default=defaults.keys,
                    help=f"plain keys per client and guest (default {defaults.keys})")
    lu.add_argument("--think", type=_seconds, default=defaults.think, metavar="SECONDS",
                    help="mean pause between a worker's operations, exponential "
                    f"(default {defaults.think:g}; 0: as fast as replies come)")
    lu.add_argument("--min-interval", type=_seconds, default=defaults.min_interval,
                    help=f"shortest time between updates (default {defaults.min_interval:g} s)")
    lu.add_argument("--max-interval", type=_seconds, default=defaults.max_interval,
                    help=f"longest time between updates (default {defaults.max_interval:g} s)")
    lu.add_argument("--durability", choices=["write", "fsync", "none"],
                    default=defaults.durability, help="the daemon's --durability (default write)")
    lu.add_argument("--plot", type=Path, metavar="FILE",
                    help="write the latency timeline: FILE.html (self-contained, inline SVG), "
                    "FILE.svg, or FILE.png (needs matplotlib, else the HTML is written)")
    lu.add_argument("--trace", action="store_true",
                    help="run the daemon with --trace-file (in the scratch directory's run/)")
    add_run_options(
        lu, defaults, timeout="seconds for xenstore-control, a reply, or the events to settle",
        workdir="scratch directory (default: a new one under /tmp)", kept="logs, state")


def main_live_update(args: argparse.Namespace) -> int:
    options = liveupdate.LiveUpdateOptions(
        cycles=args.cycles,
        clients=args.clients,
        guests=args.guests,
        dribblers=args.dribblers,
        seed=args.seed,
        keys=args.keys,
        think=args.think,
        min_interval=args.min_interval,
        max_interval=args.max_interval,
        durability=args.durability,
        timeout=args.timeout,
        workdir=args.workdir,
        keep=args.keep,
        progress=not args.no_progress,
        plot=args.plot,
        trace=args.trace,
    )
    return run_drill("live-update drill", liveupdate, options, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.drill == "live-update":
        return main_live_update(args)
    options = crash.DrillOptions(
        cycles=args.cycles,
        seed=args.seed,
        guests=args.guests,
        clients=args.clients,
        workers=args.workers,
        keys=args.keys,
        value_size=args.value_size,
        durability=args.durability,
        min_delay=args.min_delay,
        max_delay=args.max_delay,
        timeout=args.timeout,
        workdir=args.workdir,
        keep=args.keep,
        progress=not args.no_progress,
    )
    return run_drill("crash drill", crash, options, args.json)


if __name__ == "__main__":
    sys.exit(main())
