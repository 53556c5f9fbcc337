"""store.paths: validation, canonical form, path-max (spec 2, XSA-323/481)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.store.paths import (
    ancestors_and_self,
    basename,
    canonicalize,
    depth_of,
    domain_path,
    parent_of,
)


@pytest.mark.parametrize(
    ("path", "domid", "special", "path_max", "expected"),
    [
        pytest.param("/", 5, False, 0, "/", id="2:root"),
        pytest.param("/a/b", 5, False, 0, "/a/b", id="2:absolute"),
        pytest.param("a/b", 5, False, 0, "/local/domain/5/a/b", id="2:relative"),
        pytest.param("a", 0, False, 0, "/local/domain/0/a", id="2:relative-dom0"),
        pytest.param("A-z_0/9", 1, False, 0, "/local/domain/1/A-z_0/9", id="2:charset"),
        pytest.param("/a@b", 5, False, 0, "/a@b", id="2:at-inside-name"),
        pytest.param("@releaseDomain", 5, True, 0, "@releaseDomain", id="2:special-allowed"),
        pytest.param("@x/1", 5, True, 0, "@x/1", id="5.6:special-per-domain"),
        pytest.param("", 5, False, 0, "EINVAL", id="2:empty"),
        pytest.param("/a/", 5, False, 0, "EINVAL", id="2:trailing-slash"),
        pytest.param("a/", 5, False, 0, "EINVAL", id="2:relative-trailing-slash"),
        pytest.param("//", 5, False, 0, "EINVAL", id="2:double-slash-root"),
        pytest.param("/a//b", 5, False, 0, "EINVAL", id="2:double-slash"),
        pytest.param("a//b", 5, False, 0, "EINVAL", id="2:relative-double-slash"),
        pytest.param("/a b", 5, False, 0, "EINVAL", id="2:space"),
        pytest.param("/a.b", 5, False, 0, "EINVAL", id="2:dot"),
        pytest.param("/a\0b", 5, False, 0, "EINVAL", id="2:nul"),
        pytest.param("/\xe9", 5, False, 0, "EINVAL", id="2:latin1"),
        pytest.param("@foo", 5, False, 0, "EINVAL", id="2:special-refused"),
        pytest.param("/local/domain/", 5, False, 0, "EINVAL", id="10:xsa481-local-domain"),
        pytest.param("/local/domain/x/", 5, False, 0, "EINVAL", id="10:xsa481-x"),
        pytest.param("/local/domain/99999/a", 5, False, 2048, "/local/domain/99999/a",
                     id="10:xsa481-5-digits"),
        pytest.param("/local/domain/99999/a", 5, False, 1, "EINVAL", id="6.1:path-max-1"),
        # path-max: measured after /local/domain/<N>/ and refused at >= quota.
        pytest.param("a" * 9, 5, False, 10, "/local/domain/5/" + "a" * 9, id="6.1:below"),
        pytest.param("a" * 10, 5, False, 10, "EINVAL", id="6.1:at-quota"),
        pytest.param("/local/domain/12345/" + "a" * 9, 5, False, 10,
                     "/local/domain/12345/" + "a" * 9, id="10:xsa323-5-digit"),
        pytest.param("/local/domain/123456/a", 5, False, 10, "EINVAL",
                     id="10:xsa323-6-digits-not-a-domid"),
        pytest.param("/a/b/c/de", 5, False, 10, "/a/b/c/de", id="6.1:absolute-below"),
        pytest.param("/a/b/c/d/e", 5, False, 10, "EINVAL", id="6.1:absolute-at-quota"),
        pytest.param("a" * 3000, 5, False, 0, "/local/domain/5/" + "a" * 3000,
                     id="2:unlimited-privileged"),
    ],
)
def test_canonicalize(path, domid, special, path_max, expected) -> None:
    if expected == "EINVAL":
        with pytest.raises(XenstoreError) as info:
            canonicalize(path, domid, special, path_max)
        assert info.value.name == "EINVAL"
    else:
        assert canonicalize(path, domid, special, path_max) == expected


@pytest.mark.parametrize(
    ("path", "parent", "base", "depth"),
    [
        ("/", "/", "", 0),
        ("/a", "/", "a", 1),
        ("/a/b", "/a", "b", 2),
        ("/a/b/c", "/a/b", "c", 3),
        ("@releaseDomain", "/", "@releaseDomain", 0),
    ],
)
def test_parent_basename_depth(path, parent, base, depth) -> None:
    assert parent_of(path) == parent
    assert basename(path) == base
    if path[0] == "/":
        assert depth_of(path) == depth


def test_ancestors_and_self() -> None:
    assert ancestors_and_self("/") == ["/"]
    assert ancestors_and_self("/a") == ["/", "/a"]
    assert ancestors_and_self("/a/b/c") == ["/", "/a", "/a/b", "/a/b/c"]


def test_ancestors_of_a_very_deep_path() -> None:
    deep = "/x" * 5000
    chain = ancestors_and_self(deep)
    assert len(chain) == 5001 and chain[-1] == deep


def test_domain_path() -> None:
    assert domain_path(7) == "/local/domain/7"


segments = st.lists(st.text("ab-_09", min_size=1, max_size=5), min_size=1, max_size=6)


@given(segments)
def test_valid_absolute_paths_are_fixed_points(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert canonicalize(path, 3, False) == path
    assert canonicalize("/".join(parts), 3, False) == "/local/domain/3" + path
    assert parent_of(path) == ("/" + "/".join(parts[:-1]) if len(parts) > 1 else "/")
    assert ancestors_and_self(path)[-2] == parent_of(path)
    assert depth_of(path) == len(parts)


@given(st.text(max_size=12))
def test_canonicalize_never_raises_anything_but_einval(text: str) -> None:
    try:
        result = canonicalize(text, 5, True, 2048)
    except XenstoreError as error:
        assert error.name == "EINVAL"
    else:
        assert result[0] in "/@"
        assert "//" not in result
