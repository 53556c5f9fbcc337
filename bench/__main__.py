"""``python -m bench``: pyxenstored, C xenstored and oxenstored, compared in one run.

Example::

    .venv/bin/python -m bench                       # all three, 3 repeats (about 8 min)
    .venv/bin/python -m bench --only pipe-write,pipe-read,storm --repeats 5
    .venv/bin/python -m bench --targets pyxenstored,c --json-out bench.json
    .venv/bin/python -m bench --quick --targets pyxenstored      # seconds, for the tests
    .venv/bin/python -m bench --idle-guests 100 --idle-seconds 10   # bench/rings.py
    .venv/bin/python -m bench persist --help                        # bench/persist.py
    .venv/bin/python -m bench live-update --help                    # bench/liveupdate.py

All the daemons are started once, each on its own stand-in hypervisor and
socket (``bench/targets.py``), and kept running for the whole run. Every
workload (``bench/suite.py``; ``--only`` picks some) runs against each of
them in turn, repeat after repeat (for each repeat, for each workload, for
each daemon), and the table gives each figure's median over the repeats
with its ratio to the C daemon's (``x C``), then the issue's targets for
pyxenstored evaluated on those ratios. docs/benchmarks.md describes every
workload. Progress goes to stderr, one line per measurement.

``--idle-guests N`` runs ``bench/rings.py`` instead: each daemon on the
stand-in hypervisor with N idle simulated guests on rings, measuring the
daemon's CPU over ``--idle-seconds`` (targets default to pyxenstored,c).

``persist`` as the first argument runs ``bench/persist.py`` instead:
pyxenstored's recovery time for a large store and its write throughput
with each journal durability (``python -m bench persist --help``).

``live-update`` as the first argument runs ``bench/liveupdate.py``: the
service pause of one live update of pyxenstored and of C xenstored, for
stores of 1,000 to 120,000 nodes (``python -m bench live-update --help``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench import suite
from bench.rings import DEFAULT_MAX_PERCENT, as_json, format_idle_table, idle_guests
from bench.targets import TARGETS, launch_all


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    default = suite.Params()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets",
        default=None,
        help=f"comma-separated, from: {', '.join(TARGETS)} (default: all; "
        "pyxenstored,c with --idle-guests)",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="WORKLOAD,...",
        help=f"run only these workloads, from: {', '.join(suite.WORKLOADS)} "
        "(default: all but rings)",
    )
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats; medians (default 3, 1 with --quick)")
    parser.add_argument(
        "--quick", action="store_true",
        help="tiny parameters and 1 repeat (a smoke run, for the tests)",
    )
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"per timed workload (default {default.seconds:g})")
    parser.add_argument("--depth", type=int, default=None,
                        help=f"pipeline depth (default {default.depth})")
    parser.add_argument("--watchers", default=None, metavar="N,...",
                        help="fan-out watcher counts (default 10,100)")
    parser.add_argument("--storm", default=None, metavar="N,...",
                        help="boot storm sizes in VMs (default 50,300)")
    parser.add_argument("--nodes", type=int, default=None,
                        help=f"nodes of the big store (default {default.nodes:,})")
    parser.add_argument("--idle-connections", type=int, default=None, metavar="N",
                        help=f"idle connections (default {default.idle:,})")
    parser.add_argument("--xstest-iterations", type=int, default=None, metavar="N",
                        help=f"test-xenstore -i N (default {default.xstest_iterations:,})")
    parser.add_argument("--value-size", type=int, default=None, help="bytes per value (64)")
    parser.add_argument("--keys", type=int, default=None, help="distinct nodes (256)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON to FILE")
    idle = parser.add_argument_group("idle guests on rings (bench/rings.py)")
    idle.add_argument(
        "--idle-guests",
        type=int,
        default=0,
        metavar="N",
        help="instead of the workloads: N idle guests on the stand-in hypervisor, "
        "measure each daemon's CPU",
    )
    idle.add_argument("--idle-seconds", type=float, default=10.0, help="idle window (default 10)")
    idle.add_argument(
        "--max-cpu-percent",
        type=float,
        default=DEFAULT_MAX_PERCENT,
        help="exit 1 if pyxenstored uses this much of a core or more (default 1)",
    )
    args = parser.parse_args(argv)
    if args.targets is None:
        args.targets = "pyxenstored,c" if args.idle_guests > 0 else ",".join(TARGETS)
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        parser.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    args.target_names = names
    if args.only is None:
        args.workloads = [w for w in suite.WORKLOADS.values() if w.default]
    else:
        picked = [name.strip() for name in args.only.split(",") if name.strip()]
        bad = [name for name in picked if name not in suite.WORKLOADS]
        if bad or not picked:
            parser.error(f"unknown workload(s) {bad}; choose from {', '.join(suite.WORKLOADS)}")
        args.workloads = [w for name, w in suite.WORKLOADS.items() if name in picked]
    params = suite.QUICK if args.quick else default
    changes: dict[str, Any] = {}
    for arg, name in (("seconds", "seconds"), ("depth", "depth"), ("nodes", "nodes"),
                      ("idle_connections", "idle"), ("xstest_iterations", "xstest_iterations"),
                      ("value_size", "value_size"), ("keys", "keys")):
        if getattr(args, arg) is not None:
            changes[name] = getattr(args, arg)
    if args.watchers is not None:
        changes["watchers"] = _ints(args.watchers)
    if args.storm is not None:
        changes["storm_vms"] = _ints(args.storm)
    args.params = dataclasses.replace(params, **changes)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


def main_idle(args: argparse.Namespace) -> int:
    """``--idle-guests``: CPU of each daemon with idle guests on rings."""
    results, unavailable = idle_guests(args.target_names, args.idle_guests, args.idle_seconds)
    if args.json:
        document = as_json(results, unavailable)
        document["parameters"] = {"guests": args.idle_guests, "idle_seconds": args.idle_seconds}
        print(json.dumps(document, indent=2))
    else:
        print(format_idle_table(results, unavailable, args.max_cpu_percent))
    ours = [r for r in results if r.target == "pyxenstored"]
    if not results or any(r.percent >= args.max_cpu_percent for r in ours):
        return 1
    return 0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def host() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["persist"]:
        from bench import persist

        return persist.main(argv[1:])
    if argv[:1] == ["live-update"]:
        from bench import liveupdate

        return liveupdate.main(argv[1:])
    args = parse_args(argv)
    if args.idle_guests > 0:
        return main_idle(args)
    p: suite.Params = args.params
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # Domains 1..N for the storm's VMs, and the guest on a ring after them.
    with launch_all(args.target_names, p.ring_domid, say) as (running, unavailable):
        if running:
            collected = suite.run(running, args.workloads, p, args.repeats, say)
        else:
            collected = suite.Collected()
    elapsed = time.monotonic() - started
    rows = suite.summarise(collected, args.target_names)
    checks = suite.evaluate(rows, p)
    document = suite.as_json(rows, checks, args.target_names, collected, unavailable, p,
                             args.repeats)
    document.update(date=date, elapsed_s=round(elapsed, 1), host=host(),
                    command=" ".join(["python -m bench", *argv]))
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(suite.format_report(rows, checks, args.target_names, collected, unavailable,
                                  args.repeats))
        print(f"\n{date}, {elapsed:.0f} s: python -m bench {' '.join(argv)}".rstrip())
    return 0 if rows and not collected.lost else 1


if __name__ == "__main__":
    sys.exit(main())
