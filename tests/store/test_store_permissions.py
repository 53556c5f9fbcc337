"""store.permissions: parse, format and the access decision (spec 3, 1.5 SET_PERMS)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.config import DOMID_ANY
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.store.permissions import (
    ALL,
    IGNORE,
    NONE,
    READ,
    WRITE,
    Perm,
    access,
    format_perm,
    format_perms,
    owner,
    parse_perm,
    parse_perms,
    with_owner,
    without_domain,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("n0", Perm(NONE, 0), id="3.1:none"),
        pytest.param("r5", Perm(READ, 5), id="3.1:read"),
        pytest.param("w5", Perm(WRITE, 5), id="3.1:write"),
        pytest.param("b5", Perm(READ | WRITE, 5), id="3.1:both"),
        pytest.param("r0x10", Perm(READ, 16), id="1.5:hex"),
        pytest.param("r0X1f", Perm(READ, 31), id="1.5:hex-upper"),
        pytest.param("r010", Perm(READ, 8), id="1.5:octal"),
        pytest.param("r00", Perm(READ, 0), id="1.5:octal-zero"),
        pytest.param("r+7", Perm(READ, 7), id="1.5:plus-sign"),
        pytest.param("r-1", Perm(READ, 2**32 - 1), id="1.5:minus-one-u32"),
        pytest.param("r32757", Perm(READ, DOMID_ANY), id="3.1:domid-any"),
        pytest.param("r0x7FF5", Perm(READ, DOMID_ANY), id="10:domid-any-hex"),
        pytest.param("b99999", Perm(READ | WRITE, 99999), id="10:b99999-parses"),
        pytest.param("x0", "EINVAL", id="10:bad-letter"),
        pytest.param("R0", "EINVAL", id="10:uppercase-letter"),
        pytest.param("r", "EINVAL", id="10:no-domid"),
        pytest.param("", "EINVAL", id="10:empty"),
        pytest.param("r5x", "EINVAL", id="10:junk-after"),
        pytest.param("r08", "EINVAL", id="10:bad-octal-digit"),
        pytest.param("r0x", "EINVAL", id="10:hex-prefix-only"),
        pytest.param("rr5", "EINVAL", id="10:two-letters"),
        pytest.param("r 5", Perm(READ, 5), id="1.5:strtol-skips-space"),
    ],
)
def test_parse_perm(text: str, expected) -> None:
    if expected == "EINVAL":
        with pytest.raises(XenstoreError) as info:
            parse_perm(text)
        assert info.value.name == "EINVAL"
    else:
        assert parse_perm(text) == expected


@pytest.mark.parametrize(
    ("perm", "text"),
    [
        (Perm(NONE, 0), "n0"),
        (Perm(READ, 5), "r5"),
        (Perm(WRITE, 5), "w5"),
        (Perm(READ | WRITE, 5), "b5"),
        (Perm(READ | IGNORE, 7), "r7"),  # stale entries are listed unflagged
        (Perm(READ, 2**32 - 1), "r-1"),  # %i formatting
        (Perm(READ, 2**31), "r-2147483648"),
    ],
)
def test_format_perm(perm: Perm, text: str) -> None:
    assert format_perm(perm) == text


def test_format_perms_nul_terminated() -> None:
    assert format_perms(parse_perms(["n0", "r5", "w-1"])) == b"n0\0r5\0w-1\0"


OWNED_BY_5 = parse_perms(["n5", "r6", "w7", "b8", "r7"])


@pytest.mark.parametrize(
    ("perms", "domid", "target", "privileged", "expected"),
    [
        pytest.param(OWNED_BY_5, 0, None, True, ALL, id="3.2:privileged"),
        pytest.param(OWNED_BY_5, 5, None, False, ALL, id="3.2:owner"),
        pytest.param(OWNED_BY_5, 9, 5, False, ALL, id="3.2:owner-through-target"),
        pytest.param(OWNED_BY_5, 6, None, False, READ, id="3.2:acl-read"),
        pytest.param(OWNED_BY_5, 7, None, False, WRITE, id="3.2:first-match-wins"),
        pytest.param(OWNED_BY_5, 8, None, False, READ | WRITE, id="3.2:acl-both"),
        pytest.param(OWNED_BY_5, 9, None, False, NONE, id="3.2:entry0-letter"),
        pytest.param(OWNED_BY_5, 9, 6, False, READ, id="3.2:acl-through-target"),
        pytest.param(parse_perms(["r0"]), 9, None, False, READ, id="3.2:entry0-read"),
        pytest.param(parse_perms(["b0"]), 9, None, False, READ | WRITE, id="3.2:entry0-both"),
        pytest.param(parse_perms(["n0", "r9"]), 0, None, False, ALL,
                     id="3.2:unprivileged-dom0-id-owner"),
        pytest.param((Perm(NONE, 0), Perm(READ | IGNORE, 9)), 9, None, False, NONE,
                     id="3.5:stale-entry-ignored"),
        pytest.param((Perm(NONE, 0), Perm(READ | IGNORE, 9), Perm(WRITE, 9)), 9, None, False,
                     WRITE, id="3.5:stale-skipped-next-matches"),
        pytest.param((Perm(NONE, 0), Perm(READ, DOMID_ANY)), 9, None, False, READ,
                     id="3.1:domid-any-acl"),
        pytest.param((Perm(NONE, DOMID_ANY),), 9, None, False, ALL, id="3.2:domid-any-owner"),
    ],
)
def test_access(perms, domid, target, privileged, expected) -> None:
    assert access(perms, domid, target, privileged) == expected


def test_with_owner_and_without_domain() -> None:
    """Spec 3.3: inherited list with the creator as owner; spec 3.6: ACL stripping."""
    perms = parse_perms(["r0", "w5", "b6"])
    assert with_owner(perms, 5) == parse_perms(["r5", "w5", "b6"])
    assert with_owner(perms, 0) is perms
    assert owner(with_owner(perms, 9)) == 9
    assert without_domain(perms, 5) == parse_perms(["r0", "b6"])
    # The owner entry is never stripped.
    assert without_domain(perms, 0) == perms


@given(
    st.lists(
        st.tuples(st.sampled_from("nrwb"), st.integers(-(2**31), 2**31 - 1)),
        min_size=1,
        max_size=6,
    )
)
def test_parse_format_round_trip(entries: list[tuple[str, int]]) -> None:
    texts = [f"{letter}{domid}" for letter, domid in entries]
    perms = parse_perms(texts)
    assert [format_perm(perm) for perm in perms] == texts
    assert parse_perms(format_perms(perms).decode().split("\0")[:-1]) == perms


@given(st.text(max_size=10))
def test_parse_perm_never_raises_other_errors(text: str) -> None:
    try:
        perm = parse_perm(text)
    except XenstoreError as error:
        assert error.name == "EINVAL"
    else:
        assert 0 <= perm.domid < 2**32
        assert perm.flags in (NONE, READ, WRITE, READ | WRITE)
