"""XSA-419 (CVE-2022-42322, CVE-2022-42323): cooperating guests create an
unlimited number of nodes that become dom0-owned after a reboot.

Attack: guest A opens part of its tree to guest B (``b<B>``); B creates
nodes there (owned by B, counted against B's quota); B reboots (dies, a new
B starts). If B's nodes were handed to dom0, they would no longer count
against anyone, and repeating this would grow the store without bound.

Expected (spec 3.6): when B dies, every node B owns is deleted with its
subtree, wherever it is (in A's tree, in dom0's); A's own nodes stay; ACL
entries naming B are stripped; nothing new is charged to dom0; the new B
finds nothing of the old one. With ``-K`` (keep orphans) C hands them to
dom0 instead; that mode is checked too.

Layer: the pure engine.
"""

from __future__ import annotations

from engine_harness import World

from pyxenstored.config import Config
from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op


def _scene(world: World) -> None:
    h, g5, g6 = world.h, world.g5, world.g6
    h.write_ok(g5, "shared/a-own", b"a")
    h.ok(g5, Op.SET_PERMS, "shared", "n5", "b6")
    h.write_ok(g6, "/local/domain/5/shared/from-b/deep/er", b"b")
    h.write_ok(g6, "/local/domain/5/shared/b-leaf", b"b")
    h.write_ok(g6, "/pub/open/b-in-dom0-tree", b"b")
    assert h.perms(world.dom0, "/local/domain/5/shared/from-b")[0] == "n6"


def test_dead_domain_nodes_deleted_not_given_to_dom0(world: World) -> None:
    h, d0 = world.h, world.dom0
    _scene(world)
    dom0_nodes = h.recount(0)
    for _ in range(3):  # B "reboots" three times and refills each time
        h.engine.check_domains({5: DomainStatus()})
        assert sorted(h.directory(d0, "/local/domain/5/shared")) == ["a-own"]
        assert h.directory(d0, "/pub/open") == []
        assert h.perms(d0, "/local/domain/5/shared") == ["n5"]
        assert h.read(world.g5, "shared/a-own") == b"a"
        assert h.recount(6) == 0
        assert h.recount(0) == dom0_nodes
        assert h.consistent() == []
        h.write_ok(d0, "/local/domain/6")
        h.ok(d0, Op.SET_PERMS, "/local/domain/6", "n6")
        world.g6 = h.introduce(6, port=8)
        assert h.err(world.g6, Op.READ, "/local/domain/5/shared/a-own") == "EACCES"
        h.ok(world.g5, Op.SET_PERMS, "shared", "n5", "b6")
        h.write_ok(world.g6, "/local/domain/5/shared/from-b/deep/er", b"b")
        h.write_ok(world.g6, "/pub/open/b-in-dom0-tree", b"b")


def test_release_deletes_the_same_way(world: World) -> None:
    h, d0 = world.h, world.dom0
    _scene(world)
    h.ok(d0, Op.RELEASE, "6")
    assert sorted(h.directory(d0, "/local/domain/5/shared")) == ["a-own"]
    assert h.recount(6) == 0
    assert h.consistent() == []


def test_keep_orphans_hands_them_to_dom0() -> None:
    from engine_harness import Harness

    h = Harness(Config(keep_orphans=True))
    world = World(h)
    _scene(world)
    h.engine.check_domains({5: DomainStatus()})
    assert sorted(h.directory(world.dom0, "/local/domain/5/shared")) == [
        "a-own", "b-leaf", "from-b"]
    assert h.perms(world.dom0, "/local/domain/5/shared/b-leaf")[0] == "n0"
    assert h.recount(6) == 0
    assert h.consistent() == []
