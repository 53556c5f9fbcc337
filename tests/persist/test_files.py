"""persist.files: journal segments, snapshots, and recovery from what a crash leaves."""

import errno
import os
import stat
from pathlib import Path

import pytest

from pyxenstored.persist.files import (
    Durability,
    Journal,
    JournalCorrupt,
    Loaded,
    discard_obsolete,
    load,
    segment_path,
    snapshot_path,
    write_snapshot,
)
from pyxenstored.persist.framing import HEADER_SIZE, frame

SEG0 = "journal.0000000000000000"
SEG1 = "journal.0000000000000001"
SEG2 = "journal.0000000000000002"
SNAP1 = "snapshot.0000000000000001"
SNAP2 = "snapshot.0000000000000002"


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def segment(directory: Path, seq: int, *payloads: bytes, tail: bytes = b"") -> Path:
    """A segment written by hand: these records, then ``tail`` (damage)."""
    path = segment_path(directory, seq)
    path.write_bytes(b"".join(frame(p) for p in payloads) + tail)
    return path


def snapshot_file(directory: Path, seq: int, content: bytes) -> Path:
    path = snapshot_path(directory, seq)
    path.write_bytes(content)
    return path


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def contents(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in names(directory)}


# ------------------------------------------------------------------ journal


def test_append_rotate_load_round_trip(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, Durability.WRITE, 0)
    journal.append(b"a")
    journal.append(b"")
    journal.append_many([b"c", b"dd"])
    journal.append_many([])
    assert journal.size == 4 * HEADER_SIZE + 4
    assert journal.rotate() == 1
    assert (journal.seq, journal.size) == (1, 0)
    journal.append(b"e")
    journal.close()

    assert names(tmp_path) == [SEG0, SEG1]
    assert stat.S_IMODE((tmp_path / SEG0).stat().st_mode) == 0o600
    assert (tmp_path / SEG1).read_bytes() == frame(b"e")
    assert load(tmp_path) == Loaded(None, None, [b"a", b"", b"c", b"dd", b"e"], 2, [])


def test_reopening_a_segment_appends_and_counts_its_size(tmp_path: Path) -> None:
    segment(tmp_path, 0, b"old")
    journal = Journal.open(tmp_path, Durability.WRITE, 0)
    assert journal.size == HEADER_SIZE + 3
    journal.append(b"new")
    journal.close()
    assert load(tmp_path).records == [b"old", b"new"]


def test_none_durability_creates_nothing(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "absent", Durability.NONE, 5)
    journal.append(b"a")
    journal.append_many([b"b", b"c"])
    assert journal.rotate() == 6
    assert (journal.seq, journal.size) == (6, 0)
    journal.close()
    assert names(tmp_path) == []


@pytest.mark.parametrize("durability", list(Durability))
def test_closed_journal_refuses_appends(tmp_path: Path, durability: Durability) -> None:
    journal = Journal.open(tmp_path, durability, 0)
    journal.close()
    journal.close()
    with pytest.raises(ValueError, match="closed"):
        journal.append(b"late")
    with pytest.raises(ValueError, match="closed"):
        journal.rotate()


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = []

    def dribble(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data)[:3])

    journal = Journal.open(tmp_path, Durability.WRITE, 0)
    monkeypatch.setattr(os, "write", dribble)
    journal.append_many([b"hello", b"world"])
    monkeypatch.undo()
    journal.close()
    assert len(calls) == -(-2 * (HEADER_SIZE + 5) // 3)
    assert load(tmp_path).records == [b"hello", b"world"]


def test_failed_write_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    journal = Journal.open(tmp_path, Durability.WRITE, 0)
    journal.append(b"kept")
    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        journal.append(b"lost")
    monkeypatch.undo()
    assert journal.size == HEADER_SIZE + 4
    assert (tmp_path / SEG0).stat().st_size == HEADER_SIZE + 4
    journal.append(b"after")
    journal.close()
    assert load(tmp_path) == Loaded(None, None, [b"kept", b"after"], 1, [])


# ------------------------------------------------------------------ fsync


class FsyncLog:
    """Stands in for os.fsync: records what kind of file each call synced."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, fd: int) -> None:
        self.calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> FsyncLog:
    log = FsyncLog()
    monkeypatch.setattr(os, "fsync", log)
    return log


def test_fsync_durability_syncs_every_append(tmp_path: Path, fsyncs: FsyncLog) -> None:
    journal = Journal.open(tmp_path, Durability.FSYNC, 0)
    assert fsyncs.take() == ["dir"]
    for payload in (b"a", b"b", b"c"):
        journal.append(payload)
    assert fsyncs.take() == ["file"] * 3
    journal.append_many([b"d", b"e", b"f"])
    assert fsyncs.take() == ["file"]
    assert journal.rotate() == 1
    assert fsyncs.take() == ["file", "dir"]
    journal.close()
    assert fsyncs.take() == []
    assert load(tmp_path).records == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_write_durability_never_syncs(tmp_path: Path, fsyncs: FsyncLog) -> None:
    journal = Journal.open(tmp_path, Durability.WRITE, 0)
    journal.append(b"a")
    journal.append_many([b"b", b"c"])
    journal.rotate()
    journal.close()
    assert fsyncs.take() == []
    assert load(tmp_path).records == [b"a", b"b", b"c"]


def test_snapshot_is_synced_with_its_rename(tmp_path: Path, fsyncs: FsyncLog) -> None:
    write_snapshot(tmp_path, 0, b"state")
    assert fsyncs.take() == ["file", "dir"]


# ------------------------------------------------------------------ snapshots


def test_snapshot_then_later_segments(tmp_path: Path) -> None:
    segment(tmp_path, 0, b"before")
    journal = Journal.open(tmp_path, Durability.WRITE, 1)
    assert write_snapshot(tmp_path, 1, b"state") == len(frame(b"state"))
    journal.append(b"x")
    assert journal.rotate() == 2
    journal.append(b"y")
    journal.close()
    assert names(tmp_path) == [SEG0, SEG1, SEG2, SNAP1]
    assert stat.S_IMODE((tmp_path / SNAP1).stat().st_mode) == 0o600
    assert load(tmp_path) == Loaded(b"state", 1, [b"x", b"y"], 3, [])


def test_segments_below_the_snapshot_are_not_read(tmp_path: Path) -> None:
    segment(tmp_path, 0, b"a", tail=b"garbage that is never read")
    write_snapshot(tmp_path, 1, b"state")
    segment(tmp_path, 1, b"b")
    assert load(tmp_path) == Loaded(b"state", 1, [b"b"], 2, [])


def test_newest_valid_snapshot_wins(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 1, b"old")
    write_snapshot(tmp_path, 2, b"new")
    segment(tmp_path, 1, b"covered")
    segment(tmp_path, 2, b"after")
    assert load(tmp_path) == Loaded(b"new", 2, [b"after"], 3, [])


def test_leftover_tmp_is_ignored_and_removed(tmp_path: Path) -> None:
    """A crash before the rename: the previous snapshot stays in force."""
    write_snapshot(tmp_path, 1, b"previous")
    segment(tmp_path, 1, b"x")
    segment(tmp_path, 2, b"y")
    (tmp_path / (SNAP2 + ".tmp")).write_bytes(frame(b"complete but never renamed"))
    (tmp_path / "memreport.tmp").write_bytes(b"not ours")
    loaded = load(tmp_path)
    assert loaded == Loaded(b"previous", 1, [b"x", b"y"], 3, [f"removed leftover {SNAP2}.tmp"])
    assert names(tmp_path) == [SEG1, SEG2, "memreport.tmp", SNAP1]


def test_failed_snapshot_write_removes_its_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_snapshot(tmp_path, 1, b"previous")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        write_snapshot(tmp_path, 2, b"next")
    monkeypatch.undo()
    assert names(tmp_path) == [SNAP1]
    assert load(tmp_path).snapshot == b"previous"


def test_snapshot_replaces_a_previous_tmp(tmp_path: Path) -> None:
    (tmp_path / (SNAP1 + ".tmp")).write_bytes(b"x" * 1000)
    write_snapshot(tmp_path, 1, b"state")
    assert names(tmp_path) == [SNAP1]
    assert (tmp_path / SNAP1).read_bytes() == frame(b"state")


def test_discard_obsolete(tmp_path: Path) -> None:
    for seq in range(3):
        segment(tmp_path, seq, b"r%d" % seq)
    write_snapshot(tmp_path, 1, b"one")
    write_snapshot(tmp_path, 2, b"two")
    (tmp_path / (SEG0 + ".discarded")).write_bytes(b"kept for a human")
    (tmp_path / "memreport").write_bytes(b"not ours")

    assert discard_obsolete(tmp_path, 2) == [SEG0, SEG1, SNAP1]
    assert names(tmp_path) == [SEG0 + ".discarded", SEG2, "memreport", SNAP2]
    assert load(tmp_path) == Loaded(b"two", 2, [b"r2"], 3, [])
    assert discard_obsolete(tmp_path, 2) == []


# ------------------------------------------------------------------ recovery


def test_missing_directory_is_created_empty(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "dir"
    assert load(directory) == Loaded(None, None, [], 0, [])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert names(directory) == []


def test_unrelated_files_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "logfile").write_bytes(b"x")
    (tmp_path / "journal.12").write_bytes(b"not a segment name")
    assert load(tmp_path) == Loaded(None, None, [], 0, [])
    assert names(tmp_path) == ["journal.12", "logfile"]


@pytest.mark.parametrize("cut", range(1, len(frame(b"torn!"))))
def test_torn_tail_is_truncated_and_appends_continue(tmp_path: Path, cut: int) -> None:
    kept = len(frame(b"a")) + len(frame(b"bb"))
    path = segment(tmp_path, 0, b"a", b"bb", tail=frame(b"torn!")[:cut])
    loaded = load(tmp_path)
    assert loaded == Loaded(
        None,
        None,
        [b"a", b"bb"],
        1,
        [f"truncated torn tail of {SEG0} at offset {kept} ({cut} bytes)"],
    )
    assert path.stat().st_size == kept

    journal = Journal.open(tmp_path, Durability.WRITE, loaded.next_seq)
    journal.append(b"c")
    journal.close()
    assert load(tmp_path) == Loaded(None, None, [b"a", b"bb", b"c"], 2, [])


def test_zero_filled_tail_is_truncated(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 1, b"s")
    segment(tmp_path, 1, b"x")
    path = segment(tmp_path, 2, b"y", tail=bytes(4096))
    loaded = load(tmp_path)
    assert loaded.records == [b"x", b"y"]
    assert loaded.notes == [f"truncated torn tail of {SEG2} at offset 9 (4096 bytes)"]
    assert path.read_bytes() == frame(b"y")


def test_corrupt_middle_raises_and_changes_nothing(tmp_path: Path) -> None:
    path = segment(tmp_path, 0, b"a", b"bb", b"c")
    segment(tmp_path, 1, b"d")
    (tmp_path / (SNAP1 + ".tmp")).write_bytes(b"leftover")
    offset = len(frame(b"a"))
    flip(path, offset + HEADER_SIZE)
    before = contents(tmp_path)

    with pytest.raises(JournalCorrupt) as caught:
        load(tmp_path)
    assert (caught.value.path, caught.value.offset, caught.value.kind) == (path, offset, "corrupt")
    message = str(caught.value)
    assert str(path) in message
    assert f"offset {offset}" in message
    assert "--recover=truncate" in message
    assert contents(tmp_path) == before


def test_torn_record_in_an_earlier_segment_is_corruption(tmp_path: Path) -> None:
    path = segment(tmp_path, 0, b"a", tail=frame(b"half")[:5])
    segment(tmp_path, 1, b"b")
    with pytest.raises(JournalCorrupt) as caught:
        load(tmp_path)
    assert (caught.value.path, caught.value.offset, caught.value.kind) == (path, 9, "torn")


def test_truncate_corrupt_keeps_the_prefix(tmp_path: Path) -> None:
    path = segment(tmp_path, 0, b"a", b"bb", b"c")
    segment(tmp_path, 1, b"d")
    segment(tmp_path, 2, b"e")
    offset = len(frame(b"a"))
    flip(path, offset + HEADER_SIZE + 1)

    loaded = load(tmp_path, truncate_corrupt=True)
    assert (loaded.snapshot, loaded.records, loaded.next_seq) == (None, [b"a"], 1)
    assert loaded.notes == [
        f"recovering: {path}: corrupt record at offset {offset}",
        f"moved {SEG2} aside to {SEG2}.discarded",
        f"moved {SEG1} aside to {SEG1}.discarded",
        f"truncated corrupt tail of {SEG0} at offset {offset} ({2 * HEADER_SIZE + 3} bytes)",
    ]
    assert names(tmp_path) == [SEG0, SEG1 + ".discarded", SEG2 + ".discarded"]
    assert path.read_bytes() == frame(b"a")
    assert (tmp_path / (SEG1 + ".discarded")).read_bytes() == frame(b"d")

    # Repaired for good, and a new instance continues without a gap.
    assert load(tmp_path) == Loaded(None, None, [b"a"], 1, [])
    journal = Journal.open(tmp_path, Durability.WRITE, loaded.next_seq)
    journal.append(b"new")
    journal.close()
    assert load(tmp_path) == Loaded(None, None, [b"a", b"new"], 2, [])


def test_gap_in_segments_is_corruption(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 1, b"s")
    segment(tmp_path, 1, b"a")
    segment(tmp_path, 3, b"c")
    with pytest.raises(JournalCorrupt) as caught:
        load(tmp_path)
    assert (caught.value.path, caught.value.kind) == (segment_path(tmp_path, 2), "missing")
    assert SEG2 in str(caught.value)

    loaded = load(tmp_path, truncate_corrupt=True)
    assert (loaded.snapshot, loaded.records) == (b"s", [b"a"])
    assert "journal.0000000000000003.discarded" in names(tmp_path)
    assert load(tmp_path) == Loaded(b"s", 1, [b"a"], 2, [])


def test_segment_after_the_snapshot_missing_is_corruption(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 1, b"s")
    segment(tmp_path, 2, b"b")
    with pytest.raises(JournalCorrupt) as caught:
        load(tmp_path)
    assert (caught.value.path, caught.value.kind) == (segment_path(tmp_path, 1), "missing")


def test_no_snapshot_and_first_segment_missing_is_corruption(tmp_path: Path) -> None:
    segment(tmp_path, 1, b"b")
    with pytest.raises(JournalCorrupt) as caught:
        load(tmp_path)
    assert (caught.value.path, caught.value.kind) == (segment_path(tmp_path, 0), "missing")


def test_snapshot_without_segments_is_the_whole_state(tmp_path: Path) -> None:
    """As after a run without a journal: the next one continues in the snapshot's segment."""
    write_snapshot(tmp_path, 4, b"s")
    loaded = load(tmp_path)
    assert loaded == Loaded(b"s", 4, [], 4, [])
    journal = Journal.open(tmp_path, Durability.WRITE, loaded.next_seq)
    journal.append(b"x")
    journal.close()
    assert load(tmp_path) == Loaded(b"s", 4, [b"x"], 5, [])


def test_damaged_snapshot_falls_back_when_segments_remain(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 1, b"older")
    for seq in (1, 2, 3):
        segment(tmp_path, seq, b"r%d" % seq)
    snap2 = snapshot_path(tmp_path, 2)
    snap2.write_bytes(frame(b"newer"))
    flip(snap2, HEADER_SIZE)

    loaded = load(tmp_path)
    assert loaded == Loaded(
        b"older",
        1,
        [b"r1", b"r2", b"r3"],
        4,
        [
            f"{SNAP2}: torn record at offset 0, using {SNAP1}",
            f"moved {SNAP2} aside to {SNAP2}.discarded",
        ],
    )
    assert load(tmp_path) == Loaded(b"older", 1, [b"r1", b"r2", b"r3"], 4, [])


def test_damaged_only_snapshot_falls_back_to_the_whole_journal(tmp_path: Path) -> None:
    segment(tmp_path, 0, b"a")
    segment(tmp_path, 1, b"b")
    snapshot_file(tmp_path, 1, b"")
    loaded = load(tmp_path)
    assert (loaded.snapshot, loaded.snapshot_seq, loaded.records) == (None, None, [b"a", b"b"])
    assert (
        loaded.notes[0] == f"{SNAP1}: corrupt record at offset 0, using the journal from its start"
    )


def test_snapshot_with_extra_data_is_damaged(tmp_path: Path) -> None:
    segment(tmp_path, 0, b"a")
    snapshot_file(tmp_path, 0, frame(b"s") + frame(b"extra"))
    loaded = load(tmp_path)
    assert (loaded.snapshot, loaded.records) == (None, [b"a"])
    assert loaded.notes[0].startswith("snapshot.0000000000000000: corrupt record at offset 9")


def test_damaged_snapshot_without_its_segments_raises(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 1, b"older")
    segment(tmp_path, 2, b"r2")
    segment(tmp_path, 3, b"r3")
    snap2 = snapshot_file(tmp_path, 2, frame(b"newer")[:-1])
    before = contents(tmp_path)

    with pytest.raises(JournalCorrupt) as caught:
        load(tmp_path)
    assert (caught.value.path, caught.value.offset, caught.value.kind) == (snap2, 0, "snapshot")
    assert str(snap2) in str(caught.value)
    assert contents(tmp_path) == before

    # Truncating keeps what the older snapshot and the surviving journal give.
    loaded = load(tmp_path, truncate_corrupt=True)
    assert (loaded.snapshot, loaded.snapshot_seq, loaded.records, loaded.next_seq) == (
        b"older",
        1,
        [],
        1,
    )
    assert names(tmp_path) == [
        SEG2 + ".discarded",
        "journal.0000000000000003.discarded",
        SNAP1,
        SNAP2 + ".discarded",
    ]
    assert load(tmp_path) == Loaded(b"older", 1, [], 1, [])


def test_set_aside_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    for attempt in (1, 2):
        segment(tmp_path, 0, b"a")
        segment(tmp_path, 2, b"round %d" % attempt)
        loaded = load(tmp_path, truncate_corrupt=True)
        assert (loaded.records, loaded.next_seq) == ([b"a"], 1)
    assert (tmp_path / (SEG2 + ".discarded")).read_bytes() == frame(b"round 1")
    assert (tmp_path / (SEG2 + ".discarded.1")).read_bytes() == frame(b"round 2")
    assert loaded.notes[-1] == f"moved {SEG2} aside to {SEG2}.discarded.1"
