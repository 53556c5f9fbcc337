"""The state directory: journal segments, snapshots, and loading them back.

All files live in one directory, named with a 16-digit sequence number so
that names sort in sequence order:

- ``journal.<seq>``: a segment of framed records, only ever appended to;
- ``snapshot.<seq>``: one framed record holding the whole state as of the
  moment segment ``seq`` was opened. Recovery is the newest valid snapshot
  ``N`` followed by segments ``N, N+1, ...`` in order; older files are
  obsolete once snapshot ``N`` is safely written;
- ``snapshot.<seq>.tmp``: a snapshot being written, renamed into place only
  when complete and synced. One found at load is a leftover of a crash;
- ``<name>.discarded`` (``.discarded.<n>`` if taken): a file that recovery
  set aside, kept for a human.

Payloads are opaque bytes; what they mean is decided elsewhere. Everything
here is small and synchronous: the daemon calls it from its flush path and
from a forked child, so it uses no threads and no trio.
"""

import enum
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pyxenstored.persist.framing import HEADER_SIZE, Damage, frame, scan

StrPath = str | os.PathLike[str]

_NAME: Final = re.compile(r"(journal|snapshot)\.(\d{16})(\.tmp)?")
_TMP: Final = ".tmp"
_DISCARDED: Final = ".discarded"
_APPEND_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC

ProblemKind = Literal["torn", "corrupt", "missing", "snapshot"]

_PROBLEMS: Final[dict[str, str]] = {
    "torn": "{path}: record cut short at offset {offset}, with later segments after it",
    "corrupt": "{path}: corrupt record at offset {offset}",
    "missing": "{path}: journal segment missing, so the later ones cannot be replayed",
    "snapshot": (
        "{path}: damaged snapshot (bad record at offset {offset}), and the journal"
        " segments that would rebuild its state from an older one are missing"
    ),
}


def segment_path(directory: StrPath, seq: int) -> Path:
    return Path(directory, f"journal.{seq:016d}")


def snapshot_path(directory: StrPath, seq: int) -> Path:
    return Path(directory, f"snapshot.{seq:016d}")


class Durability(enum.Enum):
    """How far a journal append gets before it returns."""

    #: Nothing is written: the state lives and dies with the process.
    NONE = "none"
    #: Handed to the kernel: survives the daemon crashing, not power loss.
    WRITE = "write"
    #: On the disk: survives power loss.
    FSYNC = "fsync"


class JournalCorrupt(Exception):
    """The stored state cannot be replayed whole: acknowledged writes would be lost.

    ``load(..., truncate_corrupt=True)`` (``--recover=truncate``) accepts the
    loss and keeps the state up to the problem.
    """

    def __init__(self, path: StrPath, offset: int, kind: ProblemKind) -> None:
        super().__init__(path, offset, kind)
        self.path = Path(path)
        self.offset = offset
        self.kind = kind

    @property
    def problem(self) -> str:
        return _PROBLEMS[self.kind].format(path=self.path, offset=self.offset)

    def __str__(self) -> str:
        return (
            f"{self.problem}; restart with --recover=truncate to keep the state"
            " up to this point and discard the changes after it"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    """Make created, renamed and removed entries survive power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_segment(directory: Path, durability: Durability, seq: int) -> int | None:
    if durability is Durability.NONE:
        return None
    fd = os.open(segment_path(directory, seq), _APPEND_FLAGS, 0o600)
    if durability is Durability.FSYNC:
        # Even when the segment already existed: whoever created it may
        # have crashed before its entry was synced.
        try:
            _fsync_directory(directory)
        except BaseException:
            os.close(fd)
            raise
    return fd


class Journal:
    """Appends framed records to the current segment (``journal.<seq>``).

    With ``Durability.NONE`` it writes nothing and creates no file, but
    still counts sequence numbers.
    """

    def __init__(self, directory: Path, durability: Durability, seq: int, fd: int | None) -> None:
        self._directory = directory
        self._durability = durability
        self._closed = False
        self._attach(seq, fd)

    @classmethod
    def open(cls, directory: StrPath, durability: Durability, seq: int) -> "Journal":
        """Start appending to segment ``seq``, creating it if missing."""
        directory = Path(directory)
        return cls(directory, durability, seq, _open_segment(directory, durability, seq))

    def _attach(self, seq: int, fd: int | None) -> None:
        self._seq = seq
        self._fd = fd
        self._size = 0 if fd is None else os.fstat(fd).st_size

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def size(self) -> int:
        """Bytes in the current segment (0 with ``Durability.NONE``)."""
        return self._size

    def append(self, payload: bytes) -> None:
        """Write one record; with FSYNC, sync it before returning."""
        self._write(frame(payload))

    def append_many(self, payloads: Iterable[bytes]) -> None:
        """Write several records with one write and at most one sync (group commit)."""
        data = b"".join(frame(payload) for payload in payloads)
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            self._check_open()
            return
        try:
            _write_all(fd, data)
            if self._durability is Durability.FSYNC:
                os.fsync(fd)
        except BaseException:
            # Cut off what part of it got written: a later append after a
            # partial record would turn a torn tail into corruption. The
            # records were not acknowledged, so dropping them is right.
            os.ftruncate(fd, self._size)
            raise
        self._size += len(data)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O on a closed journal")

    def rotate(self) -> int:
        """Continue in segment ``seq + 1``; return the new sequence number.

        With FSYNC the old segment is synced once more before it is left:
        appends were synced already, but not the truncation that undoes a
        failed one.
        """
        self._check_open()
        seq = self._seq + 1
        old = self._fd
        if old is not None and self._durability is Durability.FSYNC:
            os.fsync(old)
        self._attach(seq, _open_segment(self._directory, self._durability, seq))
        if old is not None:
            os.close(old)
        return seq

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._closed = True


def write_snapshot(directory: StrPath, seq: int, payload: bytes) -> int:
    """Store ``payload`` as ``snapshot.<seq>``; return the file's size.

    It is written under a temporary name, synced, renamed into place, and
    the rename synced: a reader finds the previous snapshot or this one
    whole, and once this returns the snapshot survives power loss whatever
    the journal's durability, since older segments are discarded on its
    strength.
    """
    directory = Path(directory)
    final = snapshot_path(directory, seq)
    tmp = final.with_name(final.name + _TMP)
    data = frame(payload)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return len(data)


def discard_obsolete(directory: StrPath, seq: int) -> list[str]:
    """Delete the snapshots and segments numbered below ``seq``; return their names.

    Call only once snapshot ``seq`` is safely written: until then they are
    what recovery needs.
    """
    directory = Path(directory)
    removed = []
    for name in sorted(os.listdir(directory)):
        match = _NAME.fullmatch(name)
        if match is not None and match[3] is None and int(match[2]) < seq:
            (directory / name).unlink()
            removed.append(name)
    return removed


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a state directory holds, ready to be replayed."""

    snapshot: bytes | None
    snapshot_seq: int | None
    #: Payloads of every segment from the snapshot's on, in order.
    records: list[bytes]
    #: The segment a new instance should open: the one after the last
    #: segment kept, or the snapshot's own number if none follows it (so
    #: that the next load finds no gap even before a new snapshot exists).
    next_seq: int
    #: What loading repaired or discarded, one line each, for the log.
    notes: list[str]


@dataclass
class _Listing:
    segments: set[int]
    snapshots: set[int]
    leftovers: list[str]


def _list(directory: Path) -> _Listing:
    listing = _Listing(set(), set(), [])
    for name in sorted(os.listdir(directory)):
        match = _NAME.fullmatch(name)
        if match is None:
            continue
        kind, seq, suffix = match[1], int(match[2]), match[3]
        if suffix == _TMP:
            listing.leftovers.append(name)
        else:
            (listing.segments if kind == "journal" else listing.snapshots).add(seq)
    return listing


def listing(directory: StrPath) -> tuple[set[int], set[int]]:
    """The sequence numbers of the snapshots and of the journal segments."""
    found = _list(Path(directory))
    return found.snapshots, found.segments


def latest(directory: StrPath) -> tuple[int, int]:
    """Without reading anything: the segment a daemon taking over a live
    one continues with (the one after every existing file), and the size
    of the newest snapshot (0 if none)."""
    listing = _list(Path(directory))
    seqs = listing.segments | listing.snapshots
    size = 0
    if listing.snapshots:
        size = snapshot_path(directory, max(listing.snapshots)).stat().st_size
    return (max(seqs) + 1 if seqs else 0), size


def _read_snapshot(path: Path) -> bytes | Damage:
    found = scan(path.read_bytes())
    if found.damage is not None:
        return found.damage
    if len(found.records) == 1:
        return found.records[0]
    # Renamed into place only when complete: anything but one record is damage.
    return Damage("corrupt", HEADER_SIZE + len(found.records[0]) if found.records else 0)


def _truncate(path: Path, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(path: Path) -> str:
    """Rename ``path`` out of the way, never over what an earlier recovery set aside."""
    target = path.with_name(path.name + _DISCARDED)
    copies = 0
    while target.exists():
        copies += 1
        target = path.with_name(f"{path.name}{_DISCARDED}.{copies}")
    path.rename(target)
    return f"moved {path.name} aside to {target.name}"


def load(directory: StrPath, truncate_corrupt: bool = False) -> Loaded:
    """Read the newest valid snapshot and the segments that follow it.

    A torn tail of the last segment is a crash in mid-append and is cut off.
    Any other damage, or a segment missing from the sequence, raises
    ``JournalCorrupt`` and changes nothing, unless ``truncate_corrupt``:
    then the damaged segment is cut at the bad record and every later one
    set aside. A damaged newest snapshot is set aside in favour of an
    older one when the segments to rebuild its state are still there.
    After a successful load, loading again finds nothing to repair.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    listing = _list(directory)

    base, snapshot, snapshot_seq = 0, None, None
    damaged: list[tuple[int, Damage]] = []
    for seq in sorted(listing.snapshots, reverse=True):
        content = _read_snapshot(snapshot_path(directory, seq))
        if isinstance(content, Damage):
            damaged.append((seq, content))
        else:
            base, snapshot, snapshot_seq = seq, content, seq
            break

    present = sorted(seq for seq in listing.segments if seq >= base)
    # Segments are needed up to the last one, and far enough to rebuild
    # the state of the newest (damaged) snapshot.
    rebuild = damaged[0][0] if damaged else base
    last = max(present[-1] if present else base - 1, rebuild - 1)
    records: list[bytes] = []
    problem: JournalCorrupt | None = None
    cut: tuple[int, Damage] | None = None  # a segment to shorten, and where
    # Segments from here on are set aside, and a new instance continues
    # here: numbering stays contiguous from the snapshot on.
    next_seq = last + 1
    for seq in range(base, last + 1):
        path = segment_path(directory, seq)
        if seq not in listing.segments:
            if seq < rebuild:
                bad_seq, bad = damaged[0]
                problem = JournalCorrupt(snapshot_path(directory, bad_seq), bad.offset, "snapshot")
            else:
                problem = JournalCorrupt(path, 0, "missing")
            next_seq = seq
            break
        found = scan(path.read_bytes())
        records.extend(found.records)
        if found.damage is None:
            continue
        cut = (seq, found.damage)
        next_seq = seq + 1
        if found.damage.kind == "torn" and seq == present[-1]:
            continue  # a crash in mid-append; goes on only if segments are missing
        problem = JournalCorrupt(path, found.end, found.damage.kind)
        break
    if problem is not None and not truncate_corrupt:
        raise problem

    # Repairs, in an order that leaves a loadable directory at every step.
    notes = [] if problem is None else [f"recovering: {problem.problem}"]
    for seq in sorted(listing.segments, reverse=True):
        if seq >= next_seq:
            notes.append(_set_aside(segment_path(directory, seq)))
    using = "the journal from its start"
    if snapshot_seq is not None:
        using = snapshot_path(directory, snapshot_seq).name
    for seq, bad in damaged:
        path = snapshot_path(directory, seq)
        notes.append(f"{path.name}: {bad.kind} record at offset {bad.offset}, using {using}")
        notes.append(_set_aside(path))
    for name in listing.leftovers:
        (directory / name).unlink()
        notes.append(f"removed leftover {name}")
    if notes:
        _fsync_directory(directory)
    if cut is not None:
        seq, damage = cut
        path = segment_path(directory, seq)
        dropped = path.stat().st_size - damage.offset
        _truncate(path, damage.offset)
        notes.append(
            f"truncated {damage.kind} tail of {path.name} at offset {damage.offset}"
            f" ({dropped} bytes)"
        )
    return Loaded(snapshot, snapshot_seq, records, next_seq, notes)
