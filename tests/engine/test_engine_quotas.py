"""Per-domain quotas for a guest (spec 6.1, XSA-323/414/421).

A check fails when the new value reaches the quota (``>=``), so quota N
allows N - 1; privileged callers are exempt.
"""

import pytest
from engine_harness import Harness, World

from pyxenstored.protocol.ops import Op


def used_nodes(world: World, domid: int = 5) -> int:
    return world.h.engine.tree.accounting.of(domid).nodes


@pytest.mark.parametrize(
    ("remaining", "depth", "expected"),
    [
        pytest.param(1, 1, "OK", id="6.1:nodes-one-left"),
        pytest.param(1, 2, "ENOSPC", id="6.1:nodes-two-needed"),
        pytest.param(4, 5, "ENOSPC", id="10:xsa414-deep-path-n-minus-1"),
        pytest.param(5, 5, "OK", id="10:xsa414-deep-path-exactly-enough"),
        pytest.param(0, 1, "ENOSPC", id="6.1:nodes-none-left"),
    ],
)
def test_node_quota_deep_path(world: World, remaining: int, depth: int, expected: str) -> None:
    """XSA-414: a deep path with too few nodes left leaves no partial tree."""
    h = world.h
    used = used_nodes(world)
    h.set_quota(5, "nodes", used + remaining + 1)  # ``>=``: quota N allows N - 1
    nodes_before = set(h.engine.tree.nodes)
    path = "data/" + "/".join(f"n{i}" for i in range(depth))
    assert h.write(world.g5, path, b"v")[1].rstrip(b"\0").decode() == expected
    if expected == "OK":
        assert used_nodes(world) == used + depth
    else:
        assert set(h.engine.tree.nodes) == nodes_before
        assert used_nodes(world) == used
    assert used_nodes(world) == h.recount(5)
    assert h.consistent() == []


@pytest.mark.parametrize(
    "op", [pytest.param(Op.WRITE, id="10:xsa272-write"), pytest.param(Op.MKDIR, id="10:mkdir")]
)
def test_node_quota_enforced_on_write_and_mkdir(world: World, op: int) -> None:
    h = world.h
    h.set_quota(5, "nodes", used_nodes(world) + 3)
    results = [h.result(world.g5, op, f"data/k{i}") for i in range(4)]
    assert results == ["OK", "OK", "ENOSPC", "ENOSPC"]
    # Deleting frees quota again.
    h.ok(world.g5, Op.RM, "data/k0")
    assert h.result(world.g5, op, "data/k9") == "OK"


def test_node_quota_does_not_limit_dom0_writes_into_guest_tree(world: World) -> None:
    h = world.h
    h.set_quota(5, "nodes", 1)
    h.write_ok(h.dom0, "/local/domain/5/data/by-dom0")
    # The guest still cannot create anything.
    assert h.write(world.g5, "data/x", b"")[1] == b"ENOSPC\0"
    # Rewriting an existing node needs no new node.
    h.write_ok(world.g5, "data", b"new")


def test_node_quota_at_transaction_commit(world: World) -> None:
    """Spec 6.1 nodes: checked per creation inside the transaction too. C
    refuses a single new node before writing anything, so the transaction
    stays usable (``create_node``) and commits what fitted."""
    h = world.h
    h.set_quota(5, "nodes", used_nodes(world) + 3)
    tx = h.start(world.g5)
    h.write_ok(world.g5, "data/t1", b"", tx=tx)
    h.write_ok(world.g5, "data/t2", b"", tx=tx)
    assert h.write(world.g5, "data/t3", b"", tx=tx)[1] == b"ENOSPC\0"
    assert h.end(world.g5, tx) == "OK"
    assert h.read(world.g5, "data/t2") == b""
    assert h.err(world.g5, Op.READ, "data/t3") == "ENOENT"
    assert used_nodes(world) == h.recount(5)


def test_node_quota_refused_after_partial_work_fails_the_transaction(world: World) -> None:
    """Spec 4.1 / XSA-414: a deep path refused part-way (C has written the
    deepest node) fails the transaction: its commit answers ENOMEM."""
    h = world.h
    h.set_quota(5, "nodes", used_nodes(world) + 2)
    tx = h.start(world.g5)
    assert h.write(world.g5, "data/a/b/c", b"", tx=tx)[1] == b"ENOSPC\0"
    assert h.end(world.g5, tx) == "ENOMEM"
    assert h.err(world.g5, Op.READ, "data/a") == "ENOENT"
    assert used_nodes(world) == h.recount(5)


def test_node_quota_commit_enospc_when_outside_writes_used_it(world: World) -> None:
    """Spec 4.1: the commit answers ENOSPC when the net creation no longer fits."""
    h = world.h
    h.set_quota(5, "nodes", used_nodes(world) + 3)
    tx = h.start(world.g5)
    h.write_ok(world.g5, "/pub/open/t1", b"", tx=tx)
    h.write_ok(world.g5, "/pub/open/t2", b"", tx=tx)
    # Outside the transaction, the guest uses up its quota elsewhere.
    h.write_ok(world.g5, "data/o1")
    h.write_ok(world.g5, "data/o2")
    assert h.end(world.g5, tx) == "ENOSPC"
    assert h.directory(h.dom0, "/pub/open") == []
    assert used_nodes(world) == h.recount(5)
    assert h.consistent() == []


def test_watch_quota(world: World) -> None:
    h = world.h
    h.set_quota(5, "watches", 3)
    assert h.result(world.g5, Op.WATCH, "/a", "1") == "OK"
    assert h.result(world.g5, Op.WATCH, "/a", "2") == "OK"
    h.events(world.g5)
    assert h.result(world.g5, Op.WATCH, "/a", "3") == "ENOSPC"
    assert h.events(world.g5) == []
    h.ok(world.g5, Op.UNWATCH, "/a", "1")
    assert h.result(world.g5, Op.WATCH, "/a", "3") == "OK"
    # Privileged connections are exempt.
    h.ok(h.dom0, Op.SET_QUOTA, "watches", "1")
    h.watch(h.dom0, "/a", "x")
    h.watch(h.dom0, "/a", "y")


def test_transaction_quota(world: World) -> None:
    h = world.h
    h.set_quota(5, "transactions", 3)
    first = h.start(world.g5)
    h.start(world.g5)
    assert h.err(world.g5, Op.TRANSACTION_START, "") == "ENOSPC"
    assert h.end(world.g5, first, commit=False) == "OK"
    h.start(world.g5)
    assert h.engine.tree.accounting.of(5).transactions == 2


def test_transaction_nodes_quota(world: World) -> None:
    """Spec 6.1 transaction-nodes: quota N allows N - 1 accessed nodes; then ENOSPC,
    and the commit answers ENOMEM."""
    h = world.h
    h.set_quota(5, "transaction-nodes", 4)
    for name in ("a", "b", "c", "d"):
        h.write_ok(world.g5, f"data/{name}")
    tx = h.start(world.g5)
    assert h.read(world.g5, "data/a", tx=tx) == b""
    assert h.read(world.g5, "data/b", tx=tx) == b""
    assert h.read(world.g5, "data/c", tx=tx) == b""
    assert h.read(world.g5, "data/a", tx=tx) == b""  # already accessed: free
    assert h.err(world.g5, Op.READ, "data/d", tx=tx) == "ENOSPC"
    assert h.end(world.g5, tx) == "ENOMEM"


def test_transaction_nodes_quota_abort_is_ok(world: World) -> None:
    h = world.h
    h.set_quota(5, "transaction-nodes", 2)
    tx = h.start(world.g5)
    h.read(world.g5, "data", tx=tx)
    assert h.err(world.g5, Op.READ, "/pub", tx=tx) == "ENOSPC"
    assert h.end(world.g5, tx, commit=False) == "OK"


@pytest.mark.parametrize(
    ("value_len", "expected"),
    [
        # 16-byte header + 8 per permission + data (spec 6.1 node-size).
        pytest.param(100 - 16 - 8 - 1, "OK", id="6.1:node-size-just-below"),
        pytest.param(100 - 16 - 8, "ENOSPC", id="6.1:node-size-reached"),
        pytest.param(500, "ENOSPC", id="6.1:node-size-over"),
    ],
)
def test_node_size_quota(world: World, value_len: int, expected: str) -> None:
    h = world.h
    h.set_quota(5, "node-size", 100)
    for path in ("data", "fresh"):  # existing node, new node
        reply = h.write(world.g5, path, b"x" * value_len)[1].rstrip(b"\0").decode()
        assert reply == expected
    assert h.consistent() == []


def test_node_size_counts_children_and_permissions(world: World) -> None:
    h = world.h
    h.set_quota(5, "node-size", 60)
    h.write_ok(world.g5, "data", b"")
    # 16 + 8 + len("aaaaaaaaaaaaaaaaaaa\0") = 44; another 20-byte child entry reaches 64.
    h.write_ok(world.g5, "data/" + "a" * 19)
    assert h.write(world.g5, "data/" + "b" * 19, b"")[1] == b"ENOSPC\0"
    assert h.set_perms(world.g5, "data", "n5", "r6", "r0", "r1") == "ENOSPC"
    assert h.consistent() == []


def test_node_size_does_not_limit_dom0(world: World) -> None:
    """Spec 11 pitfall 5: the xenstore tests write 2000-byte values as dom0."""
    h = world.h
    h.write_ok(h.dom0, "/big", b"x" * 4000)
    assert len(h.read(h.dom0, "/big")) == 4000


@pytest.mark.parametrize("domid", [1, 12, 123, 1234, 12345])
def test_path_max_relative_to_any_domain_path_xsa323(h: Harness, domid: int) -> None:
    """XSA-323: path-max is measured after ``/local/domain/<N>/`` for any N."""
    home = f"/local/domain/{domid}"
    h.write_ok(h.dom0, home)
    h.ok(h.dom0, Op.SET_PERMS, home, f"n{domid}")
    guest = h.introduce(domid)
    # A relative path of 2047 characters, built from short components.
    parts, length = [], 0
    while length < 2047:
        name = "c" * min(199, 2047 - length - (1 if parts else 0))
        length += len(name) + (1 if parts else 0)
        parts.append(name)
    relative = "/".join(parts)
    assert len(relative) == 2047
    h.write_ok(guest, relative, b"v")
    # dom0 (unlimited) and the guest (absolute form) both reach it.
    assert h.read(h.dom0, f"{home}/{relative}") == b"v"
    assert h.read(guest, f"{home}/{relative}") == b"v"
    too_long = relative + "x"
    assert h.write(guest, too_long, b"")[1] == b"EINVAL\0"
    assert h.write(guest, f"{home}/{too_long}", b"")[1] == b"EINVAL\0"
    assert h.err(guest, Op.READ, too_long) == "EINVAL"
    # dom0 is limited only by the payload size.
    assert h.err(h.dom0, Op.READ, f"{home}/{too_long}") == "ENOENT"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("a" * 9, "ENOENT", id="2:relative-below"),
        pytest.param("a" * 10, "EINVAL", id="2:relative-at-quota"),
        pytest.param("/local/domain/5/" + "a" * 9, "ENOENT", id="2:absolute-own-below"),
        pytest.param("/local/domain/5/" + "a" * 10, "EINVAL", id="2:absolute-own-at-quota"),
        pytest.param("/local/domain/77777/" + "a" * 9, "EACCES", id="10:xsa323-5-digit"),
        pytest.param("/local/domain/123456/a", "EINVAL", id="10:xsa323-6-digit-not-stripped"),
        pytest.param("/pub/" + "a" * 4, "ENOENT", id="2:outside-local-below"),
        pytest.param("/pub/" + "a" * 5, "EINVAL", id="2:outside-local-at-quota"),
        pytest.param("@introduceDomain", "EINVAL", id="2:special-read"),
    ],
)
def test_path_max_small_quota(world: World, path: str, expected: str) -> None:
    h = world.h
    h.set_quota(5, "path-max", 10)
    assert h.result(world.g5, Op.READ, path) == expected
