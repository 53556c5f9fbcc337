"""``python -m bench``: run the workloads against each target, print a table.

Example::

    .venv/bin/python -m bench                       # pyxenstored only
    .venv/bin/python -m bench --targets pyxenstored,c,ocaml --seconds 3
    .venv/bin/python -m bench --json > bench.json
    .venv/bin/python -m bench --idle-guests 100 --idle-seconds 10   # bench/rings.py
    .venv/bin/python -m bench persist --help                        # bench/persist.py
    .venv/bin/python -m bench live-update --help                    # bench/liveupdate.py

Each target gets its own fresh daemon. Targets that cannot start here
(the C and OCaml daemons need a hypervisor) are listed as unavailable.
With several targets the table adds each one's ratio to the first.

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
import json
import os
import platform
import sys
from collections.abc import Sequence

from bench.rings import DEFAULT_MAX_PERCENT, as_json, format_idle_table, idle_guests
from bench.targets import TARGETS, TargetUnavailable, launch
from bench.workloads import READ, WRITE, Result, pipelined, sequential, setup_keys, watch_fanout


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets",
        default=None,
        help=f"comma-separated, from: {', '.join(TARGETS)} (default: pyxenstored; "
        "pyxenstored,c with --idle-guests)",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per workload (default 2)")
    parser.add_argument("--depth", type=int, default=64, help="pipeline depth (default 64)")
    parser.add_argument("--watchers", type=int, default=16, help="fan-out watchers (default 16)")
    parser.add_argument("--value-size", type=int, default=64, help="bytes per value (default 64)")
    parser.add_argument("--keys", type=int, default=256, help="distinct nodes (default 256)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
        args.targets = "pyxenstored,c" if args.idle_guests > 0 else "pyxenstored"
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        parser.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    args.target_names = names
    return args


def run_target(socket_path: str, args: argparse.Namespace) -> list[Result]:
    value = b"v" * args.value_size
    setup_keys(socket_path, value, args.keys)
    return [
        sequential(socket_path, READ, value, args.keys, args.seconds),
        pipelined(socket_path, READ, value, args.keys, args.seconds, args.depth),
        sequential(socket_path, WRITE, value, args.keys, args.seconds),
        pipelined(socket_path, WRITE, value, args.keys, args.seconds, args.depth),
        watch_fanout(socket_path, args.watchers, args.seconds),
    ]


def format_table(results: dict[str, list[Result]], unavailable: dict[str, str]) -> str:
    names = list(results)
    lines = []
    if names:
        rows = [f"{r.name} [{r.unit}]" for r in results[names[0]]]
        width = max(len(row) for row in rows) + 2
        header = "workload".ljust(width) + "".join(f"{name:>14}" for name in names)
        if len(names) > 1:
            header += "".join(f"{name + '/' + names[0]:>22}" for name in names[1:])
        lines += [header, "-" * len(header)]
        for index, row in enumerate(rows):
            line = row.ljust(width)
            rates = [results[name][index].rate for name in names]
            line += "".join(f"{rate:>14,.0f}" for rate in rates)
            for rate in rates[1:]:
                line += f"{rate / rates[0]:>21.2f}x" if rates[0] else f"{'-':>22}"
            lines.append(line)
        lines.append("")
        for name in names:
            for result in results[name]:
                if "p50_us" in result.details:
                    d = result.details
                    lines.append(
                        f"{name}: {result.name} latency p50 {d['p50_us']:.0f} us, "
                        f"p99 {d['p99_us']:.0f} us ({result.count} ops in {result.seconds:.2f} s)"
                    )
                elif "writes" in result.details:
                    d = result.details
                    lines.append(
                        f"{name}: {result.name}: {int(d['writes'])} writes "
                        f"({d['writes_per_s']:,.0f}/s) -> {result.count} events "
                        f"in {result.seconds:.2f} s"
                        + (f", {int(d['events_lost'])} lost" if d.get("events_lost") else "")
                    )
                else:
                    lines.append(
                        f"{name}: {result.name}: {result.count} ops in {result.seconds:.2f} s"
                    )
    for name, reason in unavailable.items():
        lines.append(f"{name}: unavailable ({reason})")
    return "\n".join(lines)


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
    results: dict[str, list[Result]] = {}
    unavailable: dict[str, str] = {}
    for name in args.target_names:
        target = TARGETS[name]
        if not args.json:
            print(f"# {name}: {target.description}", file=sys.stderr, flush=True)
        try:
            with launch(target) as running:
                results[name] = run_target(running.socket_path, args)
        except TargetUnavailable as exc:
            unavailable[name] = str(exc)
    if args.json:
        document = {
            "host": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
            },
            "parameters": {
                "seconds": args.seconds,
                "depth": args.depth,
                "watchers": args.watchers,
                "value_size": args.value_size,
                "keys": args.keys,
            },
            "results": {
                name: [
                    {
                        "workload": r.name,
                        "unit": r.unit,
                        "rate": r.rate,
                        "count": r.count,
                        "seconds": r.seconds,
                        **r.details,
                    }
                    for r in target_results
                ]
                for name, target_results in results.items()
            },
            "unavailable": unavailable,
        }
        print(json.dumps(document, indent=2))
    else:
        print(format_table(results, unavailable))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
