"""The daemon's durable state: recovery at start, one journal record per
batch, and compaction into a snapshot (issue 5, DESIGN.md invariant 1).

The shell calls ``record`` from its flush, before any reply of the batch
leaves; that single append is the group commit. Compaction rotates the
journal and writes the snapshot from a forked child, which sees the state
frozen at the fork while the parent goes on serving; once the child has
renamed its snapshot into place the segments it covers are deleted.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Final

import attrs
import cbor2

from pyxenstored.engine import Engine
from pyxenstored.persist import files, image
from pyxenstored.persist.files import Durability, Journal

log = logging.getLogger("pyxenstored.persist")

#: Compact once the journal outgrows this many times the last snapshot...
COMPACT_RATIO: Final = 2
#: ...and at least this many bytes, so that a small store is not rewritten
#: over and over.
COMPACT_MIN_BYTES: Final = 4 * 1024 * 1024


@attrs.frozen
class Recovery:
    """What a start found in the state directory, for the log."""

    snapshot_seq: int | None
    records: int
    nodes: int
    domains: int
    watches: int
    notes: tuple[str, ...]

    def describe(self) -> str:
        if self.snapshot_seq is None and not self.records:
            return "no saved state: starting afresh"
        return (
            f"restored {self.nodes} nodes, {self.domains} domains and {self.watches} "
            f"watches from snapshot {self.snapshot_seq} and {self.records} journal records"
        )


@attrs.define(eq=False)
class DurableState:
    directory: Path
    journal: Journal
    #: Bytes of the last snapshot written (the compaction yardstick).
    snapshot_size: int
    #: The generation the last journal record ended with.
    generation: int
    #: The forked snapshot writer, while one runs, and the snapshot it writes.
    compacting: int | None = None
    compacting_seq: int = 0
    #: Each ring's last recorded state, for the next snapshot.
    rings: dict[int, image.RingState] = attrs.field(factory=dict)
    #: The rings' states found at recovery, until the shell re-attaches them.
    restored_rings: dict[int, image.RingState] = attrs.field(factory=dict)
    #: A snapshot should be written whatever the journal's size.
    snapshot_wanted: bool = False

    @classmethod
    def recover(
        cls, engine: Engine, directory: str | Path, durability: Durability,
        truncate_corrupt: bool = False,
    ) -> tuple[DurableState, Recovery]:
        """Restore ``engine`` (newly made) from the directory, then start a
        fresh snapshot there so that the next start replays nothing.

        Raises ``files.JournalCorrupt`` and ``image.ImageError`` rather than
        start from a state that may miss acknowledged writes.
        """
        directory = Path(directory)
        # Hundreds of thousands of objects are made and none are garbage:
        # the cyclic collector would only walk them, again and again.
        gc.disable()
        try:
            loaded = files.load(directory, truncate_corrupt)
            saved = cbor2.loads(loaded.snapshot) if loaded.snapshot is not None else None
            restored = image.restore(engine, saved, (cbor2.loads(r) for r in loaded.records))
        finally:
            gc.enable()
        # Nor later: the restored tree lives as long as the daemon, and a
        # frozen heap is not copied page by page into a compaction child.
        gc.freeze()
        recovery = Recovery(
            loaded.snapshot_seq,
            len(loaded.records),
            len(engine.tree.nodes),
            len(engine.domains.domains),
            restored.watches,
            tuple(loaded.notes),
        )
        engine.take_touched()
        journal = Journal.open(directory, durability, loaded.next_seq)
        rings = dict(restored.rings)
        if loaded.snapshot is None:  # a first start: the image of the empty store
            size = files.write_snapshot(
                directory, journal.seq, cbor2.dumps(image.snapshot(engine, rings))
            )
            files.discard_obsolete(directory, journal.seq)
        else:
            size = len(loaded.snapshot)
        engine.tree.changes = []
        state = cls(directory, journal, size, engine.tree.generation, rings=rings,
                    restored_rings=restored.rings)
        # What was replayed goes into a snapshot soon, written in the
        # background once the daemon serves: the files are consistent as
        # they are, and the next start should not replay them again.
        state.snapshot_wanted = bool(loaded.records)
        return state, recovery

    @classmethod
    def take_over(
        cls, engine: Engine, directory: str | Path, durability: Durability,
        rings: dict[int, image.RingState],
    ) -> DurableState:
        """Go on journaling after a live update: the old instance journaled
        every change ``engine`` (rebuilt from its image and the journal)
        holds, and ran no snapshot writer at the end; a new segment follows
        the existing files."""
        directory = Path(directory)
        seq, size = files.latest(directory)
        journal = Journal.open(directory, durability, seq)
        engine.take_touched()
        engine.tree.changes = []
        return cls(directory, journal, size, engine.tree.generation, rings=dict(rings))

    def record(
        self, engine: Engine, rings: list[tuple[int, image.RingState]] | None = None
    ) -> None:
        """Journal what the batch changed, with the rings' new states; replies
        may leave and ring indices be published once this returns."""
        batch = image.take_batch(engine, self.generation, rings)
        if batch is None:
            return
        try:
            self.journal.append(cbor2.dumps(batch))
        except OSError as exc:
            # Fail-stop: better a restart from the journal than replies for
            # changes it does not hold.
            raise OSError(
                exc.errno,
                f"cannot write the journal in {self.directory} ({exc.strerror}); "
                "stopping rather than acknowledge unrecorded changes",
            ) from exc
        self.generation = batch["g"]
        self.rings.update(rings or ())
        for domid, record in batch.get("d", ()):
            if record is None:
                self.rings.pop(domid, None)

    def compaction_due(self) -> bool:
        return self.compacting is None and (
            self.snapshot_wanted
            or self.journal.size > max(COMPACT_MIN_BYTES, COMPACT_RATIO * self.snapshot_size)
        )

    def start_compaction(self, engine: Engine) -> int:
        """Rotate the journal and fork the snapshot writer; returns its pid."""
        seq = self.journal.rotate()
        self.snapshot_wanted = False
        pid = os.fork()
        if pid == 0:  # the child: the state as of the rotation, frozen
            status = 1
            try:
                # Let go of the listening socket and every connection: a
                # child outliving a killed parent must not hold them.
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                payload = cbor2.dumps(image.snapshot(engine, self.rings))
                files.write_snapshot(self.directory, seq, payload)
                status = 0
            finally:
                os._exit(status)
        self.compacting = pid
        self.compacting_seq = seq
        return seq

    def finish_compaction(self, seq: int, wait_status: int) -> None:
        """After the child exited: drop what its snapshot covers, or keep it all."""
        self.compacting = None
        if os.waitstatus_to_exitcode(wait_status) != 0:
            log.error("snapshot %d failed; the journal is kept", seq)
            return
        self.snapshot_size = files.snapshot_path(self.directory, seq).stat().st_size
        files.discard_obsolete(self.directory, seq)
        log.info("snapshot %d written (%d bytes)", seq, self.snapshot_size)

    def close(self) -> None:
        self.journal.close()
