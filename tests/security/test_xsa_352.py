"""XSA-352 (CVE-2020-29486): oxenstored let an unprivileged domain change the
owner of a node.

Attack: a guest issues SET_PERMS on a node it owns (or may write), naming a
different owner in entry 0: another guest (to charge its quota, or to plant
nodes in its name), dom0, or DOMID_ANY; directly or inside a transaction.

Expected (spec 3.4): only a privileged caller changes a node's owner; an
unprivileged one gets EPERM (C; oxenstored answers EACCES) and the
permissions stay as they were; changing the ACL entries while keeping the
owner is allowed. A stub domain acting for its target may manage the
target's nodes but not change their owner either.

Layer: the pure engine.
"""

from __future__ import annotations

import pytest
from engine_harness import World

from pyxenstored.protocol.ops import Op


@pytest.mark.parametrize("new_owner", ["n6", "n0", "b6", "r0", "n32757", "n0x6"])
def test_guest_cannot_change_owner(world: World, new_owner: str) -> None:
    h, g5 = world.h, world.g5
    h.write_ok(g5, "mine", b"m")
    assert h.set_perms(g5, "mine", new_owner, "r5") == "EPERM"
    assert h.perms(world.dom0, "/local/domain/5/mine") == ["n5"]
    tx = h.start(g5)
    assert h.set_perms(g5, "mine", new_owner, tx=tx) == "EPERM"
    assert h.end(g5, tx) == "OK"
    assert h.perms(world.dom0, "/local/domain/5/mine") == ["n5"]
    assert h.recount(6) == 1  # 6 was not charged


def test_guest_may_change_acl_keeping_owner(world: World) -> None:
    h, g5 = world.h, world.g5
    h.write_ok(g5, "mine", b"m")
    assert h.set_perms(g5, "mine", "r5", "b6") == "OK"
    assert h.perms(world.dom0, "/local/domain/5/mine") == ["r5", "b6"]
    assert h.read(world.g6, "/local/domain/5/mine") == b"m"
    # 6 may write, but not re-own or re-permission the node.
    assert h.set_perms(world.g6, "/local/domain/5/mine", "n6") == "EACCES"
    assert h.set_perms(world.g6, "/local/domain/5/mine", "r5", "b6") == "EACCES"


def test_writer_of_dom0_node_cannot_take_it(world: World) -> None:
    h, g5 = world.h, world.g5
    assert h.set_perms(g5, "/pub/open", "n5") == "EACCES"  # b0: no owner rights
    assert h.set_perms(g5, "/acl", "n5") == "EACCES"
    assert h.perms(world.dom0, "/acl") == ["n0", "w5", "r5"]


def test_stub_domain_cannot_change_owner_of_target_nodes(world: World) -> None:
    h = world.h
    h.ok(world.dom0, Op.SET_TARGET, "6", "5")
    g6 = world.g6
    assert h.set_perms(g6, "/local/domain/5/data", "n5", "r6") == "OK"
    assert h.set_perms(g6, "/local/domain/5/data", "n6") == "EPERM"
    assert h.perms(world.dom0, "/local/domain/5/data") == ["n5", "r6"]


def test_dom0_may_change_owner(world: World) -> None:
    h = world.h
    assert h.set_perms(world.dom0, "/local/domain/5/data", "n6") == "OK"
    assert h.recount(6) == 2 and h.recount(5) == 1
