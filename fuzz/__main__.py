"""Command line: ``python -m fuzz {diff,live,codec} ...`` (see --help)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz",
        description="pyxenstored fuzzers. Examples:\n"
        "  python -m fuzz diff --ops 100000 --against c\n"
        "  python -m fuzz diff --find --examples 300 --against ocaml\n"
        "  python -m fuzz live --socket /run/xenstored/socket --seconds 60\n"
        "  python -m fuzz live --seconds 30        (starts pyxenstored itself)\n"
        "  python -m fuzz codec --examples 2000\n"
        "  python -m fuzz codec --atheris -- -runs=100000   (needs pip install atheris)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("diff", help="differential run: pyxenstored vs C xenstored/oxenstored")
    d.add_argument("--ops", type=int, default=10_000, help="operations to run (campaign)")
    d.add_argument("--against", choices=["c", "ocaml"], default="c")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--length", type=int, default=50, help="operations per sequence")
    d.add_argument("--find", action="store_true",
                   help="hypothesis search that shrinks the first unexplained divergence")
    d.add_argument("--examples", type=int, default=300, help="sequences for --find")
    lv = sub.add_parser("live", help="throw generated requests at a running daemon")
    lv.add_argument("--socket", type=Path, help="daemon socket (default: start pyxenstored)")
    lv.add_argument("--command", help="start this daemon instead ({socket}, {dir} are filled in)")
    lv.add_argument("--seconds", type=float, default=30.0)
    lv.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("codec", help="decoder and in-process engine fuzzing")
    c.add_argument("--examples", type=int, default=1000)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--atheris", action="store_true", help="coverage-guided run with atheris")
    c.add_argument("rest", nargs="*", help="libFuzzer arguments after --")
    args = parser.parse_args(argv)

    if args.cmd == "codec":
        from fuzz import codec

        if args.atheris:
            return codec.run_atheris(args.rest)
        codec.run_hypothesis(args.examples, args.seed)
        return 0
    if args.cmd == "live":
        from fuzz import live

        return live.main(args.socket, args.seconds, args.seed, args.command)

    from fuzz import differential

    t0 = time.monotonic()
    if args.find:
        report = differential.find_divergence(args.against, args.examples, args.seed)
        print("\n".join(report) if report else "no unexplained divergence found")
        return 1 if report else 0
    tally = differential.campaign(args.ops, args.against, args.seed, args.length)
    elapsed = time.monotonic() - t0
    print(f"\n{tally.ops} operations in {tally.examples} sequences against {args.against}, "
          f"{elapsed:.0f} s")
    for name, count in sorted(tally.counts.items()):
        print(f"  {name}: {count}")
        for key, samples in tally.samples.items():
            if key == name or key.startswith(name + " "):
                for sample in samples:
                    print("    " + sample.replace("\n", "\n    "))
    for name, count in sorted(tally.skipped.items()):
        print(f"  not sent (reference cannot take it): {name}: {count}")
    unexplained = tally.counts.get("UNEXPLAINED", 0)
    print(f"unexplained divergences: {unexplained}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
