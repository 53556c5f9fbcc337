"""WATCH, UNWATCH, RESET_WATCHES and event delivery (spec 5, XSA-115/324/326)."""

import pytest
from engine_harness import Harness, World

from pyxenstored.protocol.ops import Op

# ------------------------------------------------------------- registration


@pytest.mark.parametrize(
    ("who", "args", "expected", "initial"),
    [
        pytest.param("dom0", ("/a", "t"), "OK", ("/a", "t"), id="5.1:watch"),
        pytest.param("dom0", ("/a", ""), "OK", ("/a", ""), id="5.1:empty-token"),
        pytest.param("g5", ("/priv/x", "t"), "OK", ("/priv/x", "t"), id="5.1:no-perm-check"),
        pytest.param("g5", ("data", "t"), "OK", ("data", "t"), id="5.1:relative-initial"),
        pytest.param("g5", ("@introduceDomain", "t"), "OK", ("@introduceDomain", "t"),
                     id="5.1:special"),
        pytest.param("dom0", ("@foo", "t"), "OK", ("@foo", "t"), id="5.1:unknown-special"),
        pytest.param("dom0", ("/a", "t", "2"), "OK", ("/a", "t"), id="5.1:depth"),
        pytest.param("dom0", ("/a", "t", "-1"), "EINVAL", None, id="5.1:negative-depth"),
        pytest.param("dom0", ("/a", "t", "abc"), "OK", ("/a", "t"), id="1.2:depth-atoi-junk"),
        pytest.param("dom0", ("/a",), "EINVAL", None, id="5.1:one-arg"),
        pytest.param("dom0", ("/a", "t", "1", "x"), "EINVAL", None, id="5.1:four-args"),
        pytest.param("dom0", ("/a/", "t"), "EINVAL", None, id="2:bad-path"),
        pytest.param("g5", ("x" * 2048, "t"), "EINVAL", None, id="2:path-max"),
    ],
)
def test_watch_registration(world: World, who, args, expected, initial) -> None:
    h = world.h
    conn = world.conn(who)
    assert h.result(conn, Op.WATCH, *args) == expected
    events = h.events(conn)
    assert events == ([initial] if initial else [])


def test_watch_reply_precedes_initial_event(h: Harness) -> None:
    """Spec 5.1: OK first, then the unconditional initial event."""
    packets = h.send(h.dom0, Op.WATCH, b"/w\0tok\0")
    assert [(p.type, p.payload) for p in packets] == [
        (Op.WATCH, b"OK\0"),
        (Op.WATCH_EVENT, b"/w\0tok\0"),
    ]
    assert packets[1].req_id == 0 and packets[1].tx_id == 0


def test_duplicate_watch_is_eexist(world: World) -> None:
    h = world.h
    h.watch(world.g5, "data", "t")
    # The same canonical path, given absolutely: still a duplicate.
    assert h.err(world.g5, Op.WATCH, "/local/domain/5/data", "t") == "EEXIST"
    assert h.events(world.g5) == []
    h.watch(world.g5, "data", "t2")
    h.watch(world.g5, "data/x", "t")
    # Other connections may use the same pair.
    h.watch(world.g6, "/local/domain/5/data", "t")


def test_unwatch(world: World) -> None:
    h = world.h
    h.watch(world.g5, "data", "t")
    assert h.err(world.g5, Op.UNWATCH, "data", "other") == "ENOENT"
    assert h.err(world.g5, Op.UNWATCH, "/nope", "t") == "ENOENT"
    assert h.err(world.g6, Op.UNWATCH, "/local/domain/5/data", "t") == "ENOENT"
    assert h.err(world.g5, Op.UNWATCH, "data") == "EINVAL"
    # Canonical match: the absolute form removes the relative watch.
    assert h.ok(world.g5, Op.UNWATCH, "/local/domain/5/data", "t") == b"OK\0"
    assert h.err(world.g5, Op.UNWATCH, "data", "t") == "ENOENT"
    h.write_ok(world.g5, "data", b"x")
    assert h.events(world.g5) == []
    assert h.engine.tree.accounting.of(5).watches == 0


def test_watch_and_unwatch_ignore_tx_id(world: World) -> None:
    """XSA-115: WATCH/UNWATCH skip the transaction lookup."""
    h = world.h
    assert h.result(world.g5, Op.WATCH, "data", "t", tx=4242) == "OK"
    h.events(world.g5)
    assert h.result(world.g5, Op.UNWATCH, "data", "t", tx=4242) == "OK"


def test_reset_watches(world: World) -> None:
    h = world.h
    h.watch(world.g5, "data", "a")
    h.watch(world.g5, "/pub", "b")
    assert h.ok(world.g5, Op.RESET_WATCHES) == b"OK\0"
    h.write_ok(h.dom0, "/pub", b"x")
    h.write_ok(world.g5, "data", b"x")
    assert h.events(world.g5) == []
    assert h.engine.tree.accounting.of(5).watches == 0
    assert h.engine.watches.by_path.get("/pub", []) == []
    # The pair can be registered again.
    h.watch(world.g5, "data", "a")


def test_reset_watches_inside_transaction_xsa484(world: World) -> None:
    """XSA-484: OK, the transaction is gone, its id then answers ENOENT."""
    h = world.h
    tx = h.start(world.g5)
    h.write_ok(world.g5, "data/t", b"", tx=tx)
    other = h.start(world.g5)
    assert h.result(world.g5, Op.RESET_WATCHES, "", tx=tx) == "OK"
    assert h.err(world.g5, Op.READ, "data", tx=tx) == "ENOENT"
    assert h.err(world.g5, Op.TRANSACTION_END, "T", tx=tx) == "ENOENT"
    assert h.err(world.g5, Op.TRANSACTION_END, "T", tx=other) == "ENOENT"
    assert h.err(world.g5, Op.READ, "data/t") == "ENOENT"
    assert h.engine.tree.accounting.of(5).transactions == 0
    assert h.consistent() == []


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("watch_path", "depth", "write_path", "fires"),
    [
        pytest.param("/w", (), "/w", True, id="5.2:self"),
        pytest.param("/w", (), "/w/a/b/c", True, id="5.2:descendant"),
        pytest.param("/w", (), "/wx", False, id="5.2:prefix-not-ancestor"),
        pytest.param("/w/a", (), "/w", False, id="5.2:ancestor-does-not-match"),
        pytest.param("/", (), "/w/a", True, id="5.2:root-matches-all"),
        pytest.param("/w", ("0",), "/w", True, id="5.2:depth0-self"),
        pytest.param("/w", ("0",), "/w/a", False, id="5.2:depth0-child"),
        pytest.param("/w", ("1",), "/w/a", True, id="5.2:depth1-child"),
        pytest.param("/w", ("1",), "/w/a/b", False, id="5.2:depth1-grandchild"),
        pytest.param("/", ("1",), "/w", True, id="5.2:root-depth1"),
        pytest.param("/", ("1",), "/w/a", False, id="5.2:root-depth1-grandchild"),
        pytest.param("/w", ("3",), "/w/a/b/c", True, id="5.2:depth3"),
    ],
)
def test_subtree_matching(h: Harness, watch_path, depth, write_path, fires) -> None:
    h.write_ok(h.dom0, "/w")
    h.watch(h.dom0, watch_path, "t", *depth)
    h.write_ok(h.dom0, write_path, b"v")
    assert h.events(h.dom0) == ([(write_path, "t")] if fires else [])


def test_relative_watch_gets_relative_events(world: World) -> None:
    """Spec 5.2: prefix stripped for relative watches, absolute ones unchanged."""
    h = world.h
    h.watch(world.g5, "data", "rel")
    h.watch(world.g5, "/local/domain/5/data", "abs")
    h.write_ok(world.g5, "data/x", b"1")
    assert h.events(world.g5) == [("data/x", "rel"), ("/local/domain/5/data/x", "abs")]
    # A socket's relative watch is relative to /local/domain/0.
    h.watch(h.dom0, "sock", "s")
    h.write_ok(h.dom0, "/local/domain/0/sock/y", b"")
    assert h.events(h.dom0) == [("sock/y", "s")]


def test_write_fires_once_for_final_path_only(h: Harness) -> None:
    """Spec 1.5 WRITE: implicitly created parents fire no event of their own."""
    h.watch(h.dom0, "/", "t")
    h.write_ok(h.dom0, "/a/b/c", b"")
    assert h.events(h.dom0) == [("/a/b/c", "t")]
    # Rewriting the same value still fires; MKDIR of an existing node does not.
    h.write_ok(h.dom0, "/a/b/c", b"")
    h.ok(h.dom0, Op.MKDIR, "/a/b")
    assert h.events(h.dom0) == [("/a/b/c", "t")]


def test_set_perms_fires(h: Harness) -> None:
    h.write_ok(h.dom0, "/p")
    h.watch(h.dom0, "/p", "t")
    h.ok(h.dom0, Op.SET_PERMS, "/p", "n0", "r3")
    assert h.events(h.dom0) == [("/p", "t")]


def test_rm_fires_subtree_and_exact_for_existing_descendants(h: Harness) -> None:
    """Spec 5.2 RM: X in SUBTREE mode plus existing descendants in EXACT mode (C)."""
    d0 = h.dom0
    h.write_ok(d0, "/r/a/b")
    h.write_ok(d0, "/r/c")
    h.watch(d0, "/", "root")
    h.watch(d0, "/r", "r")
    h.watch(d0, "/r/a", "a")
    h.watch(d0, "/r/a/b", "b")
    h.watch(d0, "/r/zz", "missing")
    h.watch(d0, "/r/a", "a-depth0", "0")
    h.ok(d0, Op.RM, "/r")
    events = h.events(d0)
    assert sorted(events) == sorted(
        [("/r", "root"), ("/r", "r"), ("/r/a", "a"), ("/r/a", "a-depth0"), ("/r/a/b", "b")]
    )
    # Children are deleted (and fire) before their parents.
    assert events.index(("/r/a/b", "b")) < events.index(("/r/a", "a")) < events.index(("/r", "r"))


def test_rm_of_missing_node_fires_nothing(h: Harness) -> None:
    h.write_ok(h.dom0, "/r")
    h.watch(h.dom0, "/", "t")
    h.ok(h.dom0, Op.RM, "/r/missing")
    assert h.events(h.dom0) == []


def test_failed_request_fires_nothing(world: World) -> None:
    h = world.h
    h.watch(h.dom0, "/", "t")
    h.err(world.g5, Op.WRITE, "/pub/x")
    h.err(world.g5, Op.RM, "/pub")
    assert h.events(h.dom0) == []


# --------------------------------------------------------------- ordering


def test_events_precede_the_reply_on_the_writers_connection(h: Harness) -> None:
    """Spec 5.3 (C): the writer's own watch event comes before its OK."""
    h.watch(h.dom0, "/o", "t")
    packets = h.send(h.dom0, Op.WRITE, b"/o/x\0v")
    assert [p.type for p in packets] == [Op.WATCH_EVENT, Op.WRITE]


def test_events_keep_request_order(h: Harness) -> None:
    h.watch(h.dom0, "/", "t")
    for name in ("c", "a", "b"):
        h.write_ok(h.dom0, f"/{name}")
    h.ok(h.dom0, Op.RM, "/a")
    assert h.events(h.dom0) == [("/c", "t"), ("/a", "t"), ("/b", "t"), ("/a", "t")]


def test_duplicate_pending_events_collapse(h: Harness) -> None:
    """Spec 5.3: an identical unsent event is not queued twice."""
    from pyxenstored.protocol.wire import Packet

    watcher = h.engine.connect_socket()
    h.watch(watcher, "/d", "t")
    h.watch(watcher, "/d", "u")
    for req in range(3):
        h.engine.handle(h.dom0, Packet(Op.WRITE, req + 1, 0, b"/d\0x"))
    h.drain(h.dom0)
    assert h.events(watcher) == [("/d", "t"), ("/d", "u")]
    # Once sent, the same event is queued again.
    h.write_ok(h.dom0, "/d", b"y")
    assert h.events(watcher) == [("/d", "t"), ("/d", "u")]


def test_special_events_are_not_collapsed(h: Harness) -> None:
    """XSA-326: ``@`` events are exempt from collapsing."""
    h.watch(h.dom0, "@introduceDomain", "t")
    h.introduce(7)
    h.introduce(8)
    h.ok(h.dom0, Op.RELEASE, "7")
    h.introduce(7)
    events = h.events(h.dom0)
    assert events.count(("@introduceDomain", "t")) == 3


def test_oversized_event_is_dropped_xsa324(h: Harness) -> None:
    """XSA-324: a ~4000-byte token plus a deep path make an event over 4096: dropped."""
    token = "T" * 4000
    h.ok(h.dom0, Op.WATCH, "/big", token)
    assert h.events(h.dom0) == [("/big", token)]
    h.watch(h.dom0, "/big", "small")
    deep = "/big/" + "/".join(["abcdefghi"] * 12)
    h.write_ok(h.dom0, deep, b"")
    assert h.events(h.dom0) == [(deep, "small")]
    h.write_ok(h.dom0, "/big", b"")
    assert sorted(h.events(h.dom0)) == sorted([("/big", token), ("/big", "small")])
    assert h.consistent() == []


def test_initial_event_over_4096_is_dropped(h: Harness) -> None:
    path = "/" + "a" * 2000
    token = "t" * 2200
    packets = h.send(h.dom0, Op.WATCH, f"{path}\0{token}\0".encode())
    assert [(p.type, p.payload) for p in packets] == [(Op.WATCH, b"OK\0")]


# --------------------------------------------------- permission filter (XSA-115)


def test_guest_root_watch_sees_only_readable_nodes(world: World) -> None:
    """XSA-115: an event reaches a guest only if it can read the node or its parent."""
    h = world.h
    g5 = world.g5
    h.watch(g5, "/", "all")
    d0 = h.dom0
    h.write_ok(d0, "/priv/hidden", b"x")  # node and parent unreadable
    assert h.events(g5) == []
    h.write_ok(d0, "/priv/child", b"x")  # node readable through r5
    assert h.events(g5) == [("/priv/child", "all")]
    h.write_ok(d0, "/pub/new", b"x")  # inherits /pub's r0: readable
    h.write_ok(d0, "/priv/child/kid", b"x")  # parent readable
    assert h.events(g5) == [("/pub/new", "all"), ("/priv/child/kid", "all")]
    h.write_ok(d0, "/priv/child/kid", b"y")
    h.ok(d0, Op.SET_PERMS, "/priv/child/kid", "n0")
    h.write_ok(d0, "/priv/child/kid/deeper", b"y")  # node n0, parent n0
    assert h.events(g5) == [("/priv/child/kid", "all")]
    # Another guest sees none of them.
    h.watch(world.g6, "/", "six")
    h.write_ok(d0, "/priv/child", b"z")
    assert h.events(world.g6) == []


def test_set_perms_old_permissions_qualify(world: World) -> None:
    """Spec 5.4: SET_PERMS that removes access still notifies the old readers."""
    h = world.h
    h.write_ok(h.dom0, "/priv/open", b"")
    h.ok(h.dom0, Op.SET_PERMS, "/priv/open", "n0", "r5")
    h.watch(world.g5, "/priv/open", "t")
    h.ok(h.dom0, Op.SET_PERMS, "/priv/open", "n0")
    assert h.events(world.g5) == [("/priv/open", "t")]
    h.write_ok(h.dom0, "/priv/open", b"x")
    assert h.events(world.g5) == []


def test_rm_events_filtered_by_permissions(world: World) -> None:
    h = world.h
    h.write_ok(h.dom0, "/priv/child/a", b"")
    h.ok(h.dom0, Op.SET_PERMS, "/priv/child/a", "n0")
    h.write_ok(h.dom0, "/priv/child/a/b", b"")
    h.watch(world.g5, "/priv/child/a", "a")  # a unreadable, its parent readable
    h.watch(world.g5, "/priv/child/a/b", "b")  # b and its parent unreadable
    h.ok(h.dom0, Op.RM, "/priv/child")
    assert h.events(world.g5) == [("/priv/child/a", "a")]


def test_introduce_domain_not_delivered_to_guests(world: World) -> None:
    """XSA-115: ``@introduceDomain`` is readable by priv only by default."""
    h = world.h
    h.watch(world.g5, "@introduceDomain", "g")
    h.watch(world.g5, "@introduceDomain", "gd", "1")
    h.watch(world.g5, "@introduceDomain/9", "g9")
    h.watch(h.dom0, "@introduceDomain", "d")
    h.introduce(9)
    assert h.events(world.g5) == []
    assert h.events(h.dom0) == [("@introduceDomain", "d")]
    # dom0 may grant access (spec 3.7).
    h.ok(h.dom0, Op.SET_PERMS, "@introduceDomain", "n0", "r5")
    # SET_PERMS itself fires in SUBTREE mode, depth or not (C ``is_child``).
    assert sorted(h.events(world.g5)) == [("@introduceDomain", "g"), ("@introduceDomain", "gd")]
    h.introduce(10)
    assert sorted(h.events(world.g5)) == sorted(
        [("@introduceDomain", "g"), ("@introduceDomain/10", "gd")]
    )


def test_release_domain_delivered_to_guests(world: World) -> None:
    """Spec 3.7/5.6: ``@releaseDomain`` is readable by all (DOMID_ANY) since 4.22."""
    h = world.h
    h.watch(world.g5, "@releaseDomain", "g")
    h.ok(h.dom0, Op.RELEASE, "6")
    assert h.events(world.g5) == [("@releaseDomain", "g")]


def test_released_guest_gets_no_events(world: World) -> None:
    h = world.h
    h.watch(world.g6, "/pub", "t")
    h.ok(h.dom0, Op.RELEASE, "6")
    h.write_ok(h.dom0, "/pub", b"x")
    assert world.g6 not in h.engine.connections
    assert h.engine.watches.by_path.get("/pub", []) == []


def test_disconnect_drops_watches(h: Harness) -> None:
    conn = h.engine.connect_socket()
    h.watch(conn, "/x", "t")
    h.engine.disconnect(conn)
    h.write_ok(h.dom0, "/x")
    assert h.engine.watches.by_path == {}


def test_output_limit_drops_events_not_replies(h: Harness) -> None:
    """Spec 5.7 / XSA-326: events beyond the queue limit are dropped; replies are not."""
    from pyxenstored.config import Config

    small = Harness(Config(max_output_bytes=200))
    watcher = small.engine.connect_socket()
    small.watch(watcher, "/", "t")
    for i in range(50):
        small.write_ok(small.dom0, f"/n{i}")
    events = small.events(watcher)
    assert 0 < len(events) < 50
    assert small.engine.connections[watcher].outbox.dropped_events > 0
