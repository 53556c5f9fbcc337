"""WatchRegistry matching (spec 5.1, 5.2, 5.6) and Watch event paths."""

import pytest

from pyxenstored.watches import Watch, WatchRegistry


def registry(*watches: Watch) -> WatchRegistry:
    reg = WatchRegistry()
    for watch in watches:
        reg.add(watch)
    return reg


def w(path: str, token: str = "t", depth: int = -1, conn: int = 1, prefix: int = 0) -> Watch:
    return Watch(conn, path, token, depth, prefix)


@pytest.mark.parametrize(
    ("watch_path", "depth", "event", "matches"),
    [
        pytest.param("/a", -1, "/a", True, id="5.2:self"),
        pytest.param("/a", -1, "/a/b/c/d", True, id="5.2:descendant"),
        pytest.param("/a", -1, "/ab", False, id="5.2:name-prefix"),
        pytest.param("/a/b", -1, "/a", False, id="5.2:ancestor"),
        pytest.param("/", -1, "/x/y", True, id="5.2:root"),
        pytest.param("/a", 0, "/a", True, id="5.2:depth0-self"),
        pytest.param("/a", 0, "/a/b", False, id="5.2:depth0-child"),
        pytest.param("/a", 1, "/a/b", True, id="5.2:depth1-child"),
        pytest.param("/a", 1, "/a/b/c", False, id="5.2:depth1-grandchild"),
        pytest.param("/a", 2, "/a/b/c", True, id="5.2:depth2-grandchild"),
        pytest.param("/", 0, "/", True, id="5.2:root-depth0-self"),
        pytest.param("/", 0, "/a", False, id="5.2:root-depth0-child"),
        pytest.param("/", 1, "/a", True, id="5.2:root-depth1-child"),
        pytest.param("/", 1, "/a/b", False, id="5.2:root-depth1-grandchild"),
        pytest.param("@introduceDomain", -1, "/a", False, id="5.6:special-not-subtree"),
    ],
)
def test_subtree(watch_path: str, depth: int, event: str, matches: bool) -> None:
    watch = w(watch_path, depth=depth)
    assert (watch in list(registry(watch).subtree(event))) is matches


def test_subtree_many_watches_in_ancestor_order() -> None:
    watches = [w("/a/b", "ab"), w("/", "root"), w("/a", "a"), w("/a/b/c", "abc"), w("/z", "z")]
    reg = registry(*watches)
    assert [watch.token for watch in reg.subtree("/a/b/c")] == ["root", "a", "ab", "abc"]


def test_exact() -> None:
    reg = registry(w("/a", "1"), w("/a", "2", depth=0), w("/a/b", "3"))
    assert [watch.token for watch in reg.exact("/a")] == ["1", "2"]
    assert list(reg.exact("/nothing")) == []


def test_remove_cleans_index() -> None:
    first, second = w("/a", "1"), w("/a", "2")
    reg = registry(first, second)
    reg.remove(first)
    assert list(reg.exact("/a")) == [second]
    reg.remove(second)
    assert reg.by_path == {}


def test_same_path_and_token_on_two_connections() -> None:
    one, two = w("/a", conn=1), w("/a", conn=2)
    reg = registry(one, two)
    reg.remove(one)
    assert list(reg.exact("/a")) == [two]


@pytest.mark.parametrize(
    ("watch_path", "depth", "domid", "expected"),
    [
        pytest.param("@introduceDomain", -1, 3, "@introduceDomain", id="5.6:plain"),
        pytest.param("@introduceDomain", 1, 3, "@introduceDomain/3", id="5.6:depth1"),
        pytest.param("@introduceDomain", 2, 3, "@introduceDomain/3", id="5.6:depth2"),
        pytest.param("@introduceDomain", 0, 3, None, id="5.6:depth0-never"),
        pytest.param("@introduceDomain/3", -1, 3, "@introduceDomain/3", id="5.6:per-domain"),
        pytest.param("@introduceDomain/3", 0, 3, "@introduceDomain/3", id="5.6:per-domain-d0"),
        pytest.param("@introduceDomain/4", -1, 3, None, id="5.6:other-domain"),
        pytest.param("@releaseDomain", -1, 3, None, id="5.6:other-special"),
        pytest.param("/", -1, 3, None, id="5.6:root-not-special"),
    ],
)
def test_special(watch_path: str, depth: int, domid: int, expected: str | None) -> None:
    reg = registry(w(watch_path, depth=depth))
    got = [path for _, path in reg.special("@introduceDomain", domid)]
    assert got == ([expected] if expected else [])


def test_event_path_strips_relative_prefix() -> None:
    prefix = len("/local/domain/5/")
    relative = w("/local/domain/5/data", prefix=prefix)
    assert relative.event_path("/local/domain/5/data/x") == "data/x"
    assert w("/local/domain/5/data").event_path("/local/domain/5/data") == "/local/domain/5/data"


def test_deep_event_matching_is_iterative() -> None:
    deep = "/n" * 2000
    reg = registry(w("/", "root"), w(deep, "self"))
    assert [watch.token for watch in reg.subtree(deep)] == ["root", "self"]
