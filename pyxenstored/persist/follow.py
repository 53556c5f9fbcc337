"""Reading a state directory that a live daemon is still writing (issue 6).

A live update's new instance loads the snapshot and the journal while the
old instance goes on serving, then keeps reading what the old one appends,
so that when the old one stops only the last few records are left to
read. Unlike ``files.load`` it repairs nothing: a record cut short at the
end of the newest segment is an append in progress, read again later.

Segments are left in order: once segment ``seq + 1`` exists the old daemon
has stopped appending to ``seq``, so ``seq`` is read to its end once more
and must then end on a record boundary. The old instance starts no
compaction while an update is under way, so no file that is still needed
is deleted while it is followed.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyxenstored.persist import files
from pyxenstored.persist.files import JournalCorrupt, segment_path, snapshot_path
from pyxenstored.persist.framing import scan


class JournalFollower:
    """The newest snapshot, then every journal record after it, as written."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        #: The segment being read and the offset just after its last whole record.
        self.seq = 0
        self.offset = 0
        self._fd: int | None = None

    def start(self) -> bytes | None:
        """Open the newest snapshot (returned, None if there is none yet) and
        position before the first segment it does not cover."""
        snapshots, segments = files.listing(self.directory)
        snapshot: bytes | None = None
        if snapshots:
            self.seq = max(snapshots)
            found = scan(snapshot_path(self.directory, self.seq).read_bytes())
            if found.damage is not None or len(found.records) != 1:
                raise JournalCorrupt(snapshot_path(self.directory, self.seq),
                                     found.end, "corrupt")
            snapshot = found.records[0]
        elif segments:
            self.seq = min(segments)
        self._open()
        return snapshot

    @property
    def position(self) -> tuple[int, int]:
        return self.seq, self.offset

    def poll(self) -> list[bytes]:
        """Every whole record appended since the last call, in order."""
        records: list[bytes] = []
        while True:
            following = segment_path(self.directory, self.seq + 1).exists()
            records.extend(self._read(final=following))
            if not following:
                return records
            self.seq += 1
            self._open()

    def _open(self) -> None:
        self.close()
        self.offset = 0
        try:
            self._fd = os.open(segment_path(self.directory, self.seq), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._fd = None  # not created yet: the old instance opens it on its next append

    def _read(self, final: bool) -> list[bytes]:
        if self._fd is None:
            self._open()
            if self._fd is None:
                if final:
                    raise JournalCorrupt(segment_path(self.directory, self.seq), 0, "missing")
                return []
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size - self.offset, self.offset) if size > self.offset else b""
        found = scan(data)
        if found.damage is not None and (final or found.damage.kind == "corrupt"):
            raise JournalCorrupt(segment_path(self.directory, self.seq),
                                 self.offset + found.end, found.damage.kind)
        self.offset += found.end
        return found.records

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
