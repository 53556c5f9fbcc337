"""``pyxenstored-state``: convert between a state directory and a Xen migration stream.

::

    pyxenstored-state export [-v 1|2] [--no-transactions] STATE_DIR OUT
    pyxenstored-state import STREAM STATE_DIR
    pyxenstored-state dump STREAM

``export`` loads a pyxenstored state directory (snapshot and journal, as
the daemon does at start) and writes the state as a migration stream,
the format C xenstored reads at live update (``<rundir>/state_dump``):
``-v 1 --no-transactions`` for C 4.17. ``import`` reads a stream (C's
``state_dump``, or one ``export`` wrote) and writes it as a new state
directory that ``pyxenstored --state-dir`` starts from. ``dump`` prints
the records of a stream, one per line.

Neither direction talks to a daemon: stop it first, or copy its files.
Loading a state directory fires each restored watch once, as a daemon
start does; those events are in the exported stream with the replies
still owed. A state directory keeps neither socket connections nor open
transactions nor a ring's half-sent message: ``import`` says what it drops.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cbor2

from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.persist import files, image, migration


def load_engine(state_dir: Path) -> tuple[Engine, image.Restored]:
    """The engine a daemon would start with from ``state_dir``."""
    if not state_dir.is_dir():
        raise FileNotFoundError(f"{state_dir}: no such state directory")
    loaded = files.load(state_dir)
    engine = Engine(Config())
    saved = cbor2.loads(loaded.snapshot) if loaded.snapshot is not None else None
    restored = image.restore(engine, saved, (cbor2.loads(record) for record in loaded.records))
    engine.take_effects()
    return engine, restored


def export_state(state_dir: Path, out: Path, version: int, transactions: bool) -> str:
    engine, restored = load_engine(state_dir)
    pending_io = {}
    for domid, ring in restored.rings.items():
        domain = engine.domains.get(domid)
        if domain is not None and domain.conn_id is not None:
            pending_io[domain.conn_id] = (bytes(ring["partial"]), bytes(ring["outgoing"]))
    data = migration.export(
        engine, version=version, transactions=transactions, pending_io=pending_io
    )
    out.write_bytes(data)
    rings = sum(1 for conn in engine.connections.values() if not conn.is_socket)
    return (
        f"{out}: {len(data)} bytes, version {version}: {len(engine.tree.nodes)} nodes,"
        f" {len(engine.domains.domains)} domains, {rings} ring connections,"
        f" {restored.watches} watches"
    )


def import_state(stream: Path, state_dir: Path) -> list[str]:
    if state_dir.exists() and any(state_dir.iterdir()):
        raise FileExistsError(f"{state_dir}: not empty; import writes a new state directory")
    engine = Engine(Config())
    result = migration.import_stream(stream.read_bytes(), engine)
    lines = [
        f"{stream}: version {result.version}: {result.nodes} nodes,"
        f" {len(engine.domains.domains)} domains, {len(result.rings)} ring connections,"
        f" {result.watches} watches, {result.transactions} open transactions"
    ]
    for ring in result.rings:
        queued = len(engine.connections[ring.conn_id].outbox.messages)
        lost = [
            f"{what} ({len(data)} bytes)"
            for what, data in (
                ("pending input", ring.pending_input),
                ("a partly sent message", ring.partial_output),
            )
            if data
        ]
        if queued:
            lost.append(f"{queued} queued messages")
        if lost:
            lines.append(f"domain {ring.domid}: not kept in a state directory: " + ", ".join(lost))
    for sock in result.sockets:
        lines.append(
            f"socket connection {sock.stream_conn_id} (fd {sock.fd}) dropped, with"
            f" {len(sock.watches)} watches and {len(sock.messages)} queued messages"
        )
    if result.created_domains:
        lines.append(f"domain records made for DOMAIN_DATA: {list(result.created_domains)}")
    if result.skipped:
        lines.append(f"unknown records skipped: types {sorted(set(result.skipped))}")
    lines.extend(result.notes)
    if result.transactions:
        lines.append(
            "open transactions are not kept in a state directory: their clients get EAGAIN"
        )
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    files.write_snapshot(state_dir, 0, cbor2.dumps(image.snapshot(engine)))
    return lines


def dump_stream(stream: Path) -> list[str]:
    parsed = migration.parse(stream.read_bytes())
    order = "big" if parsed.big_endian else "little"
    lines = [f"xenstore migration stream, version {parsed.version}, {order}-endian"]
    lines.extend(migration.describe(record) for record in parsed.records)
    lines.append("END")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pyxenstored-state",
        description="Convert between a pyxenstored state directory and a Xen"
        " xenstore migration stream (C xenstored's live-update state_dump).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    out = commands.add_parser("export", help="state directory -> migration stream")
    out.add_argument("state_dir", type=Path)
    out.add_argument("out", type=Path)
    out.add_argument("-v", "--stream-version", type=int, choices=migration.VERSIONS, default=2)
    out.add_argument(
        "--no-transactions",
        action="store_true",
        help="leave out open transactions (C's readers take their nodes for committed ones)",
    )
    into = commands.add_parser("import", help="migration stream -> new state directory")
    into.add_argument("stream", type=Path)
    into.add_argument("state_dir", type=Path)
    show = commands.add_parser("dump", help="print a migration stream's records")
    show.add_argument("stream", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            lines = [
                export_state(
                    args.state_dir, args.out, args.stream_version, not args.no_transactions
                )
            ]
        elif args.command == "import":
            lines = import_state(args.stream, args.state_dir)
        else:
            lines = dump_stream(args.stream)
    except (migration.MigrationError, image.ImageError, files.JournalCorrupt, OSError) as error:
        print(f"pyxenstored-state: {error}", file=sys.stderr)
        return 1
    stream = sys.stdout if args.command == "dump" else sys.stderr
    for line in lines:
        print(line, file=stream)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
