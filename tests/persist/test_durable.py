"""DurableState: recovery, one record per batch, compaction by a forked child."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_harness import Harness

from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.persist import files, image
from pyxenstored.persist.durable import DurableState
from pyxenstored.persist.files import Durability, JournalCorrupt
from pyxenstored.protocol.ops import Op

REPO = Path(__file__).resolve().parents[2]


def started(directory: Path, **kwargs: bool) -> tuple[Harness, DurableState]:
    h = Harness()
    durable, _ = DurableState.recover(h.engine, directory, Durability.WRITE, **kwargs)
    return h, durable


def state(engine: Engine) -> image.Plain:
    snap = image.snapshot(engine)
    for record in snap["domains"]:
        if record["conn"] is not None:
            del record["conn"]["order"]
    return snap


def test_each_batch_is_journaled_and_recovered(tmp_path: Path) -> None:
    h, durable = started(tmp_path)
    h.write_ok(h.dom0, "/a", b"1")
    durable.record(h.engine)
    h.write_ok(h.dom0, "/b", b"2")
    h.request(h.dom0, Op.RM, "/a")
    durable.record(h.engine)
    durable.record(h.engine)  # nothing new: no record
    durable.close()
    assert len(files.load(tmp_path).records) == 2
    again, durable = started(tmp_path)
    assert state(again.engine) == state(h.engine)
    assert again.result(again.dom0, Op.READ, "/a") == "ENOENT"
    durable.close()


def test_replayed_records_go_into_a_snapshot_soon(tmp_path: Path) -> None:
    """A start that replayed the journal asks for a compaction at once (run in
    the background by the server), so the next start replays nothing; a start
    with nothing to replay rewrites nothing."""
    h, durable = started(tmp_path)
    assert not durable.compaction_due()
    h.write_ok(h.dom0, "/a", b"1")
    durable.record(h.engine)
    durable.close()
    again, durable = started(tmp_path)
    assert durable.compaction_due()
    seq = durable.start_compaction(again.engine)
    assert durable.compacting is not None
    _, status = os.waitpid(durable.compacting, 0)
    durable.finish_compaction(seq, status)
    assert not durable.compaction_due()
    durable.close()
    loaded = files.load(tmp_path)
    assert loaded.records == [] and loaded.snapshot_seq == seq
    snapshot = files.snapshot_path(tmp_path, seq)
    written = snapshot.stat().st_mtime_ns
    third, durable = started(tmp_path)
    assert not durable.compaction_due()
    durable.close()
    assert sorted(tmp_path.glob("snapshot.*")) == [snapshot]
    assert snapshot.stat().st_mtime_ns == written
    assert third.read(third.dom0, "/a") == b"1"


def test_compaction_in_a_forked_child(tmp_path: Path) -> None:
    h, durable = started(tmp_path)
    for index in range(50):
        h.write_ok(h.dom0, f"/n{index}", b"x" * 100)
        durable.record(h.engine)
    seq = durable.start_compaction(h.engine)
    # The parent goes on serving while the child writes.
    h.write_ok(h.dom0, "/after", b"y")
    durable.record(h.engine)
    pid = durable.compacting
    assert pid is not None
    _, status = os.waitpid(pid, 0)
    durable.finish_compaction(seq, status)
    assert durable.compacting is None
    names = sorted(path.name for path in tmp_path.iterdir())
    kept = [files.segment_path(tmp_path, seq), files.snapshot_path(tmp_path, seq)]
    assert names == [path.name for path in kept]
    durable.close()
    again, durable = started(tmp_path)
    assert state(again.engine) == state(h.engine)
    assert again.read(again.dom0, "/after") == b"y"
    durable.close()


def test_compaction_is_due_when_the_journal_outgrows_the_snapshot(tmp_path: Path) -> None:
    h, durable = started(tmp_path)
    assert not durable.compaction_due()
    durable.snapshot_size = 10
    value = b"v" * 2000
    for index in range(2200):  # about 4.5 MB of records
        h.write_ok(h.dom0, f"/n{index % 10}", value)
        durable.record(h.engine)
    assert durable.compaction_due()
    durable.close()


def test_damaged_journal_stops_recovery_unless_truncate(tmp_path: Path) -> None:
    h, durable = started(tmp_path)
    for index in range(3):
        h.write_ok(h.dom0, f"/n{index}", b"x")
        durable.record(h.engine)
    durable.close()
    segment = files.segment_path(tmp_path, durable.journal.seq)
    data = bytearray(segment.read_bytes())
    data[12] ^= 0xFF  # inside the first record, two more follow
    segment.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as info:
        started(tmp_path)
    assert str(segment) in str(info.value)
    again, durable = started(tmp_path, truncate_corrupt=True)
    assert again.result(again.dom0, Op.READ, "/n0") == "ENOENT"
    durable.close()


def test_daemon_refuses_a_damaged_journal(tmp_path: Path) -> None:
    """The command exits 1 with the file named, instead of serving a store
    that may miss acknowledged writes."""
    directory = tmp_path / "state"
    engine = Engine(Config())
    durable, _ = DurableState.recover(engine, directory, Durability.WRITE)
    engine.tree.create("/a", b"1", engine.tree.nodes["/"].perms)
    durable.record(engine)
    engine.tree.create("/b", b"2", engine.tree.nodes["/"].perms)
    durable.record(engine)
    durable.close()
    segment = files.segment_path(directory, durable.journal.seq)
    data = bytearray(segment.read_bytes())
    data[10] ^= 0xFF
    segment.write_bytes(bytes(data))
    argv = [sys.executable, "-m", "pyxenstored", "-N", "--socket", str(tmp_path / "sock"),
            "--state-dir", str(directory)]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LD_PRELOAD": ""})
    assert result.returncode == 1
    assert "cannot restore the store" in result.stderr and str(segment) in result.stderr
    assert not (tmp_path / "sock").exists()


def test_snapshot_child_holds_no_inherited_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child outliving a killed daemon must not keep its listening socket
    (clients would connect and hang, and a restart would find it in use)."""
    import socket
    import time

    h, durable = started(tmp_path)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "sock"))
    listener.listen()
    real_write = files.write_snapshot

    def slow_write(directory: Path, seq: int, payload: bytes) -> int:
        time.sleep(1.0)
        return real_write(directory, seq, payload)

    monkeypatch.setattr(files, "write_snapshot", slow_write)
    seq = durable.start_compaction(h.engine)
    pid = durable.compacting
    assert pid is not None
    time.sleep(0.3)
    inherited = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    _, status = os.waitpid(pid, 0)
    durable.finish_compaction(seq, status)
    listener.close()
    durable.close()
    assert inherited == [0, 1, 2]
    assert os.waitstatus_to_exitcode(status) == 0
