"""JournalFollower: a live update's new instance reads the state directory
while the old instance writes it, and ends with exactly the live tree."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from engine_harness import Harness
from test_handover import whole_state

from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.persist import files, handover, image
from pyxenstored.persist.durable import DurableState
from pyxenstored.persist.files import Durability, JournalCorrupt
from pyxenstored.persist.follow import JournalFollower
from pyxenstored.persist.framing import frame


def follow_into(h: Harness, follower: JournalFollower) -> None:
    image.replay(h.engine.tree, map(cbor2.loads, follower.poll()))


def test_follows_appends_and_rotations_to_the_live_tree(tmp_path: Path) -> None:
    live = Harness()
    durable, _ = DurableState.recover(live.engine, tmp_path, Durability.WRITE)
    live.write_ok(live.dom0, "/before", b"0")
    durable.record(live.engine)

    copy = Harness()
    follower = JournalFollower(tmp_path)
    snapshot = follower.start()
    assert snapshot is not None
    image.load_store(copy.engine, cbor2.loads(snapshot))
    follow_into(copy, follower)
    assert copy.read(copy.dom0, "/before") == b"0"

    for round_ in range(3):
        for i in range(20):
            live.write_ok(live.dom0, f"/r{round_}/k{i}", b"v%d" % i)
            durable.record(live.engine)
        live.request(live.dom0, 13, "/r0/k3")  # RM
        durable.record(live.engine)
        durable.journal.rotate()  # a new segment, as compaction starts one
        follow_into(copy, follower)
    assert follower.position == (durable.journal.seq, durable.journal.size)
    assert copy.engine.tree.generation == live.engine.tree.generation
    assert image.snapshot(copy.engine)["nodes"] == image.snapshot(live.engine)["nodes"]
    follower.close()
    durable.close()


def test_a_record_being_appended_is_read_when_whole(tmp_path: Path) -> None:
    live = Harness()
    durable, _ = DurableState.recover(live.engine, tmp_path, Durability.WRITE)
    follower = JournalFollower(tmp_path)
    follower.start()
    assert follower.poll() == []
    live.write_ok(live.dom0, "/a", b"1")
    payload = cbor2.dumps(image.take_batch(live.engine, durable.generation))
    data = frame(payload)
    path = files.segment_path(tmp_path, durable.journal.seq)
    with open(path, "ab") as segment:
        segment.write(data[:5])
        segment.flush()
        assert follower.poll() == []  # half a record: not yet
        segment.write(data[5:])
    assert follower.poll() == [payload]
    follower.close()
    durable.close()


def test_a_left_segment_must_end_whole(tmp_path: Path) -> None:
    live = Harness()
    durable, _ = DurableState.recover(live.engine, tmp_path, Durability.WRITE)
    follower = JournalFollower(tmp_path)
    follower.start()
    with open(files.segment_path(tmp_path, durable.journal.seq), "ab") as segment:
        segment.write(frame(b"x")[:5])
    durable.journal.rotate()
    with pytest.raises(JournalCorrupt):
        follower.poll()
    follower.close()
    durable.close()


def test_an_image_without_nodes_completes_the_followed_tree(tmp_path: Path) -> None:
    """The handover's image leaves the tree out; with the followed tree the new
    engine equals the live one, and a tree behind the image is refused."""
    live = Harness()
    durable, _ = DurableState.recover(live.engine, tmp_path, Durability.WRITE)
    live.write_ok(live.dom0, "/x", b"1")
    tx = live.start(live.dom0)
    live.write_ok(live.dom0, "/x/in-tx", b"2", tx=tx)
    live.watch(live.dom0, "/x", "tok")
    durable.record(live.engine)
    saved = cbor2.loads(cbor2.dumps(handover.handover_out(live.engine, 0.0, {}, {}, {}, {},
                                                          nodes=False)))
    assert "nodes" not in saved["store"]

    with pytest.raises(image.ImageError):  # a tree that is behind the image
        handover.handover_in(Engine(Config()), saved, 0.0)

    copy = Harness()
    copy.engine = Engine(Config())
    follower = JournalFollower(tmp_path)
    image.load_store(copy.engine, cbor2.loads(follower.start() or b""))
    follow_into(copy, follower)
    handover.handover_in(copy.engine, saved, 0.0)
    assert whole_state(copy.engine) == whole_state(live.engine)
    copy.dom0 = live.dom0
    assert copy.end(copy.dom0, tx) == "OK"
    assert copy.read(copy.dom0, "/x/in-tx") == b"2"
    follower.close()
    durable.close()
