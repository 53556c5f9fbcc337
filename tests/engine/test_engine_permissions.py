"""Permissions through the engine: ownership, inheritance, ACLs, DOMID_ANY (spec 3)."""

import pytest
from engine_harness import World

from pyxenstored.protocol.ops import Op


@pytest.mark.parametrize(
    ("creator", "parent_perms", "path", "expected"),
    [
        pytest.param("g5", ("b0", "r6"), "/inh/x", ["b5", "r6"], id="3.3:guest-owns-created"),
        pytest.param("g5", ("b0", "r6"), "/inh/x/y/z", ["b5", "r6"],
                     id="3.3:guest-owns-implicit-parents"),
        pytest.param("dom0", ("b0", "r6"), "/inh/x", ["b0", "r6"], id="3.3:dom0-copies-parent"),
        pytest.param("dom0", ("n5", "r6"), "/inh/x", ["n5", "r6"],
                     id="3.3:dom0-keeps-guest-owner"),
        pytest.param("g5", ("n5",), "/inh/x", ["n5"], id="3.3:guest-under-own"),
        pytest.param("g6", ("n0", "w6"), "/inh/x", ["n6", "w6"], id="3.3:guest-via-acl"),
    ],
)
def test_inheritance(world: World, creator, parent_perms, path, expected) -> None:
    h = world.h
    h.write_ok(h.dom0, "/inh")
    h.ok(h.dom0, Op.SET_PERMS, "/inh", *parent_perms)
    h.write_ok(world.conn(creator), path, b"")
    for node in ("/inh/x", path):
        assert h.perms(h.dom0, node) == expected
    assert h.consistent() == []


def test_guest_owner_has_full_access_to_its_nodes(world: World) -> None:
    """Spec 3.2 step 2: the owner may read, write and chmod even with entry 0 = n."""
    h = world.h
    h.write_ok(h.dom0, "/given")
    h.ok(h.dom0, Op.SET_PERMS, "/given", "n5")
    assert h.read(world.g5, "/given") == b""
    h.write_ok(world.g5, "/given", b"mine")
    assert h.set_perms(world.g5, "/given", "r5", "b6") == "OK"
    assert h.read(world.g6, "/given") == b"mine"
    h.write_ok(world.g6, "/given", b"six")
    # Guest 6 (ACL b6, not owner) may not change permissions.
    assert h.set_perms(world.g6, "/given", "r5") == "EACCES"
    h.ok(world.g5, Op.RM, "/given")


def test_entry0_letter_applies_to_others(world: World) -> None:
    h = world.h
    h.ok(h.dom0, Op.SET_PERMS, "/priv", "w0")
    assert h.err(world.g6, Op.READ, "/priv") == "EACCES"
    h.write_ok(world.g6, "/priv", b"w")
    h.ok(h.dom0, Op.SET_PERMS, "/priv", "r0", "n6")
    assert h.read(world.g5, "/priv") == b"w"
    assert h.err(world.g6, Op.READ, "/priv") == "EACCES"


def test_errno_masking_by_nearest_ancestor(world: World) -> None:
    """Spec 1.4: ENOENT only when the caller may read the nearest existing ancestor."""
    h = world.h
    assert h.err(world.g5, Op.READ, "/priv/a/b/c") == "EACCES"
    assert h.err(world.g5, Op.READ, "/priv/child/a/b") == "ENOENT"
    assert h.err(world.g6, Op.READ, "/priv/child/a/b") == "EACCES"
    assert h.err(world.g5, Op.DIRECTORY, "/pub/none") == "ENOENT"
    assert h.err(world.g5, Op.GET_PERMS, "/nothing/at/all") == "EACCES"
    assert h.err(h.dom0, Op.GET_PERMS, "/nothing/at/all") == "ENOENT"
    # An existing but forbidden node is EACCES whatever its parent allows.
    h.write_ok(h.dom0, "/pub/closed")
    h.ok(h.dom0, Op.SET_PERMS, "/pub/closed", "n0")
    assert h.err(world.g5, Op.READ, "/pub/closed") == "EACCES"


def test_domid_any_acl_and_owner(world: World) -> None:
    """Spec 3.1/3.4: DOMID_ANY (32757) matches every connection; sockets may set it."""
    h = world.h
    assert h.set_perms(h.dom0, "/priv", "n0", "r32757") == "OK"
    assert h.perms(h.dom0, "/priv") == ["n0", "r32757"]
    assert h.read(world.g6, "/priv") == b"s"
    assert h.set_perms(h.dom0, "/priv", "b32757") == "OK"
    h.write_ok(world.g5, "/priv", b"any")
    assert h.set_perms(world.g5, "/priv", "b32757", "r5") == "OK"


def test_domid_any_without_feature_is_stale(world: World) -> None:
    """Spec 3.4: a DOMID_ANY entry from a domain without the feature is kept but ignored."""
    h = world.h
    h.ok(h.dom0, Op.SET_FEATURE, "9", "6")  # ERROR | WATCHDEPTH, no DOMID_ANY
    h.write_ok(h.dom0, "/local/domain/9")
    h.ok(h.dom0, Op.SET_PERMS, "/local/domain/9", "n9")
    g9 = h.introduce(9)
    assert h.set_perms(g9, "/local/domain/9", "n9", "r32757") == "OK"
    assert h.perms(h.dom0, "/local/domain/9") == ["n9", "r32757"]
    assert h.err(world.g6, Op.READ, "/local/domain/9") == "EACCES"
    # A stale entry does not stop a later entry from matching.
    assert h.set_perms(g9, "/local/domain/9", "n9", "w32757", "r6") == "OK"
    assert h.read(world.g6, "/local/domain/9") == b""


def test_dead_domain_stripped_from_special_node_acls(world: World) -> None:
    """Spec 3.6: the special nodes are visited by domain cleanup too."""
    h = world.h
    h.ok(h.dom0, Op.SET_PERMS, "@introduceDomain", "n0", "r6", "r5")
    h.ok(h.dom0, Op.RELEASE, "6")
    assert h.perms(h.dom0, "@introduceDomain") == ["n0", "r5"]
    assert h.perms(h.dom0, "@releaseDomain") == ["n0", "r32757"]


def test_unknown_owner_refused_unknown_acl_kept(world: World) -> None:
    """Spec 3.5: an unknown owner is ENOENT; unknown ACL domains are stored flagged."""
    h = world.h
    assert h.set_perms(h.dom0, "/pub", "n32760") == "ENOENT"
    assert h.set_perms(h.dom0, "/pub", "n0", "r32760") == "OK"
    assert h.perms(h.dom0, "/pub") == ["n0", "r32760"]


def test_socket_connections_are_privileged(world: World) -> None:
    """Spec 3.2: sockets act as store_domid == priv_domid: full access everywhere."""
    h = world.h
    other = h.engine.connect_socket()
    assert h.read(other, "/local/domain/5/data") == b"d"
    h.write_ok(other, "/local/domain/5/data", b"sock")
    assert h.set_perms(other, "/local/domain/5/data", "n6") == "OK"
