"""XSA-115 (CVE-2020-29480): watch events leaked the names of nodes a guest
cannot read, and special watches were delivered to anyone.

Attack: an unprivileged guest watches ``/`` (or ``@introduceDomain``,
``@releaseDomain``) to learn every path dom0 or other guests create,
change or remove; it asks IS_DOMAIN_INTRODUCED about other domains; it
passes a bogus transaction id on WATCH/UNWATCH.

Expected (spec 5.4, 5.6, 1.5, section 10): an event for node N reaches an
unprivileged watcher only if it can read N (now, or before the change for
SET_PERMS and removals) or N's parent; the initial event of WATCH is not
filtered; ``@introduceDomain`` goes only to those who can read the special
node (dom0); ``@releaseDomain`` is readable by all (C 4.22) so guests get
it; IS_DOMAIN_INTRODUCED is privileged (EACCES); the header's tx_id is
ignored on WATCH and UNWATCH.

Layer: the pure engine, with the standard ``World`` (see engine_harness).
The ring variant against C/O/py is in tests/fakexen/test_fakexen_advisories.py.
"""

from __future__ import annotations

from engine_harness import ERROR, World

from pyxenstored.engine.domains import DomainStatus
from pyxenstored.protocol.ops import Op


def test_root_watch_sees_only_readable_nodes(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.watch(g5, "/", "root")
    h.write_ok(d0, "/priv/hidden", b"x")  # n0 under n0: invisible
    h.write_ok(d0, "/priv/child", b"c2")  # readable by 5 (r5): seen
    h.write_ok(d0, "/pub/new", b"n")  # inherits r0: seen
    h.write_ok(d0, "/local/domain/6/secret", b"s")  # 6's: invisible
    h.write_ok(d0, "/acl", b"a2")  # w5 first: not readable, parent n0: invisible
    h.ok(d0, Op.MKDIR, "/tool/xenstored/x")  # invisible
    h.write_ok(d0, "/local/domain/5/mine", b"m")  # own home: seen
    assert h.events(g5) == [
        ("/priv/child", "root"),
        ("/pub/new", "root"),
        ("/local/domain/5/mine", "root"),
    ]


def test_parent_readable_reveals_child(world: World) -> None:
    """An n0 node under a readable parent: the name is visible through the
    parent's listing anyway, so the event is delivered (C's rule)."""
    h, d0, g5 = world.h, world.dom0, world.g5
    h.watch(g5, "/pub", "pub")
    h.write_ok(d0, "/pub/closed", b"x")
    h.ok(d0, Op.SET_PERMS, "/pub/closed", "n0")
    assert h.events(g5) == [("/pub/closed", "pub")]  # (one collapsed duplicate)
    h.write_ok(d0, "/pub/closed", b"x2")  # n0, but its parent is readable
    assert h.events(g5) == [("/pub/closed", "pub")]
    h.write_ok(d0, "/pub/closed/deeper", b"y")  # neither it nor its parent
    assert h.events(g5) == []


def test_set_perms_and_rm_use_old_permissions(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.write_ok(d0, "/priv/child/leaf", b"l")  # inherits n0 r5
    h.watch(g5, "/priv", "priv")
    h.watch(g5, "/priv/child/leaf", "leaf")
    h.ok(d0, Op.SET_PERMS, "/priv/child", "n0")  # readable before: seen
    assert h.events(g5) == [("/priv/child", "priv")]
    h.ok(d0, Op.SET_PERMS, "/priv/child", "n0")  # not readable either way
    assert h.events(g5) == []
    h.ok(d0, Op.RM, "/priv/child")
    # The leaf (still r5) is reported to its exact watcher; /priv/child,
    # n0 under an n0 parent, is not.
    assert h.events(g5) == [("/priv/child/leaf", "leaf")]


def test_rm_of_subtree_filters_each_descendant(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.write_ok(d0, "/pub/tree/open/a", b"")
    h.write_ok(d0, "/pub/tree/shut", b"")
    h.ok(d0, Op.SET_PERMS, "/pub/tree/shut", "n0")
    h.write_ok(d0, "/pub/tree/shut/inner", b"")  # n0 under n0
    for path in ("/pub/tree/open/a", "/pub/tree/shut/inner"):
        h.watch(g5, path, "exact")
    h.ok(d0, Op.RM, "/pub/tree")
    assert h.events(g5) == [("/pub/tree/open/a", "exact")]


def test_transaction_commit_events_are_filtered(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.watch(g5, "/", "root")
    tx = h.start(d0)
    h.write_ok(d0, "/priv/tx-hidden", b"x", tx=tx)
    h.write_ok(d0, "/pub/tx-seen", b"y", tx=tx)
    assert h.events(g5) == []
    assert h.end(d0, tx) == "OK"
    assert h.events(g5) == [("/pub/tx-seen", "root")]


def test_initial_event_is_not_filtered(world: World) -> None:
    h, g5 = world.h, world.g5
    h.ok(g5, Op.WATCH, "/priv", "p")
    assert h.events(g5) == [("/priv", "p")]
    h.ok(g5, Op.WATCH, "/no/such/node", "n")
    assert h.events(g5) == [("/no/such/node", "n")]


def test_introduce_domain_only_to_privileged(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    h.ok(g5, Op.WATCH, "@introduceDomain", "g")
    h.ok(g5, Op.WATCH, "@introduceDomain", "g1", "1")
    h.ok(g5, Op.WATCH, "@introduceDomain/7", "g7")
    h.ok(d0, Op.WATCH, "@introduceDomain", "d")
    h.ok(d0, Op.WATCH, "@introduceDomain", "d1", "1")
    h.events(g5)
    h.events(d0)
    h.introduce(7, port=9)
    assert h.events(g5) == []
    assert h.events(d0) == [("@introduceDomain", "d"), ("@introduceDomain/7", "d1")]
    assert h.err(g5, Op.GET_PERMS, "@introduceDomain") == "EACCES"


def test_release_domain_is_public(world: World) -> None:
    """C 4.22 makes @releaseDomain readable by all: guests learn of deaths."""
    h, g5 = world.h, world.g5
    h.ok(g5, Op.WATCH, "@releaseDomain", "rel")
    h.events(g5)
    h.engine.check_domains({5: DomainStatus()})  # 6 is gone
    assert h.events(g5) == [("@releaseDomain", "rel")]


def test_is_domain_introduced_is_privileged(world: World) -> None:
    h, g5 = world.h, world.g5
    for domid in ("5", "6", "0", "999"):
        assert h.err(g5, Op.IS_DOMAIN_INTRODUCED, domid) == "EACCES"
    assert h.ok(world.dom0, Op.IS_DOMAIN_INTRODUCED, "6") == b"T\0"


def test_watch_and_unwatch_ignore_tx_id(world: World) -> None:
    h, d0, g5 = world.h, world.dom0, world.g5
    assert h.request(g5, Op.WATCH, "a", "bogus", tx=0xDEAD) == (Op.WATCH, b"OK\0")
    tx = h.start(g5)
    assert h.request(g5, Op.WATCH, "b", "in-tx", tx=tx) == (Op.WATCH, b"OK\0")
    assert h.end(g5, tx, commit=False) == "OK"
    h.events(g5)
    h.write_ok(d0, "/local/domain/5/b", b"1")  # the watch outlived the transaction
    assert h.events(g5) == [("b", "in-tx")]
    assert h.request(g5, Op.UNWATCH, "a", "bogus", tx=0xBEEF) == (Op.UNWATCH, b"OK\0")
    h.write_ok(d0, "/local/domain/5/a", b"1")
    assert h.events(g5) == []
    # Other operations do check it.
    assert h.request(g5, Op.READ, "data", tx=0xDEAD) == (ERROR, b"ENOENT\0")
