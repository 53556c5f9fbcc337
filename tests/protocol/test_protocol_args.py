"""C xenstored's argument helpers (spec 1.2; spec 1.5 SET_PERMS for strtol base 0).

Facts come from C: ``onearg``/``get_strings`` (core.c), ``parse_domid``
(domain.c), and glibc's ``atoi`` = ``(int) strtol(s, NULL, 10)``.
Every table row starts with the spec section it checks.
"""

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.protocol.args import atoi, one_arg, parse_domid, strings, strtol0, strtoul10
from pyxenstored.protocol.errors import XenstoreError

EINVAL = "EINVAL"

LONG_MAX = 2**63 - 1
LONG_MIN = -(2**63)
ULONG_MAX = 2**64 - 1


def _ids(rows: list) -> list[str]:
    return [f"{row[0]}-{i}" for i, row in enumerate(rows)]


def _expect(func: Callable[[Any], object], arg: object, expected: object) -> None:
    if expected == EINVAL:
        with pytest.raises(XenstoreError) as info:
            func(arg)
        assert info.value.name == EINVAL
    else:
        assert func(arg) == expected


# --------------------------------------------------------------------------
# onearg: exactly one NUL, as the last byte
# --------------------------------------------------------------------------

ONE_ARG = [
    # (spec, payload, expected string or EINVAL)
    ("spec 1.2", b"a\0", "a"),
    ("spec 1.2", b"/local/domain/1\0", "/local/domain/1"),
    ("spec 1.2", b"\0", ""),  # one NUL, last: the empty string (C returns "")
    ("spec 1.2", b"/\xff\x80\0", "/\xff\x80"),  # latin-1: bytes map 1:1
    ("spec 1.2", b"", EINVAL),  # empty payload
    ("spec 1.2", b"a", EINVAL),  # missing terminator
    ("spec 1.2", b"a\0b\0", EINVAL),  # two strings
    ("spec 1.2", b"\0\0", EINVAL),
    ("spec 1.2", b"a\0b", EINVAL),  # NUL not last
    ("spec 1.2", b"\0a", EINVAL),
    ("spec 1.2", b"a\0\0", EINVAL),
    ("spec 1.2", b"a" * 4095 + b"\0", "a" * 4095),
]


@pytest.mark.parametrize(("spec", "payload", "expected"), ONE_ARG, ids=_ids(ONE_ARG))
def test_one_arg(spec: str, payload: bytes, expected: str) -> None:
    _expect(one_arg, payload, expected)


@given(st.binary().filter(lambda b: b"\0" not in b))
def test_one_arg_roundtrips_any_nul_free_bytes(body: bytes) -> None:
    # spec 1.2: latin-1 keeps every byte, so the string encodes back exactly.
    assert one_arg(body + b"\0").encode("latin-1") == body


# --------------------------------------------------------------------------
# get_strings: every NUL-terminated string; trailing bytes ignored
# --------------------------------------------------------------------------

STRINGS = [
    # (spec, payload, expected strings)
    ("spec 1.2", b"", []),
    ("spec 1.2", b"abc", []),  # no NUL at all: no strings
    ("spec 1.2", b"\0", [""]),
    ("spec 1.2", b"\0\0", ["", ""]),
    ("spec 1.2", b"a\0", ["a"]),
    ("spec 1.2", b"a\0b\0", ["a", "b"]),
    ("spec 1.2", b"a\0b", ["a"]),  # bytes after the last NUL are ignored
    ("spec 1.2", b"a\0b\0junk", ["a", "b"]),
    ("spec 1.2", b"a\0\0b\0", ["a", "", "b"]),
    ("spec 1.2", b"\xff\0\x01\0", ["\xff", "\x01"]),
]


@pytest.mark.parametrize(("spec", "payload", "expected"), STRINGS, ids=_ids(STRINGS))
def test_strings(spec: str, payload: bytes, expected: list[str]) -> None:
    assert strings(payload) == expected


@given(
    st.lists(st.binary().filter(lambda b: b"\0" not in b), max_size=10),
    st.binary().filter(lambda b: b"\0" not in b),
)
def test_strings_count_equals_nul_count(parts: list[bytes], tail: bytes) -> None:
    # spec 1.2: get_strings returns the number of NULs; the tail is ignored.
    payload = b"".join(part + b"\0" for part in parts) + tail
    result = strings(payload)
    assert len(result) == payload.count(b"\0")
    assert [s.encode("latin-1") for s in result] == parts


# --------------------------------------------------------------------------
# atoi: glibc (int) strtol(s, NULL, 10)
# --------------------------------------------------------------------------

ATOI = [
    # (spec, text, expected)
    ("spec 1.2", "12", 12),
    ("spec 1.2", " 12x", 12),  # leading space skipped, junk stops the number
    ("spec 1.2", "-3", -3),
    ("spec 1.2", "+7", 7),
    ("spec 1.2", "x", 0),  # junk yields 0
    ("spec 1.2", "", 0),
    ("spec 1.2", " ", 0),
    ("spec 1.2", "-", 0),
    ("spec 1.2", "+", 0),
    ("spec 1.2", "- 5", 0),  # no space between sign and digits
    ("spec 1.2", "+-5", 0),
    ("spec 1.2", "--5", 0),
    ("spec 1.2", "\t\n\v\f\r 5", 5),  # C isspace set
    ("spec 1.2", "007", 7),  # base 10: no octal
    ("spec 1.2", "0x10", 0),  # base 10: no hex
    ("spec 1.2", "1e3", 1),
    ("spec 1.2", "12 34", 12),
    ("spec 1.2", "-0", 0),
    ("spec 1.2", "\u0662", 0),  # non-ASCII digits are not digits in C
    ("spec 1.2", "\xb2", 0),  # superscript two (latin-1 byte 0xb2)
    ("spec 1.2", "\xa05", 0),  # NBSP (latin-1 0xa0) is not C whitespace
    ("spec 1.2", "2147483647", 2147483647),
    ("spec 1.2", "-2147483648", -2147483648),
    ("spec 1.2", "2147483648", -2147483648),  # (int) truncation of the long
    ("spec 1.2", "4294967295", -1),
    ("spec 1.2", "4294967296", 0),
    ("spec 1.2", "4294967297", 1),
    ("spec 1.2", "-4294967295", 1),
    ("spec 1.2", "9223372036854775807", -1),  # LONG_MAX truncated
    # Past the long range glibc's strtol saturates before the (int) cast.
    pytest.param(
        "spec 1.2",
        "9223372036854775808",
        -1,
        id="spec 1.2-LONG_MAX+1",
    ),
    pytest.param(
        "spec 1.2",
        "99999999999999999999",
        -1,
        id="spec 1.2-1e20",
    ),
    pytest.param(
        "spec 1.2",
        "-9223372036854775809",
        0,  # LONG_MIN truncated to int is 0
        id="spec 1.2-LONG_MIN-1",
    ),
]


@pytest.mark.parametrize(("spec", "text", "expected"), ATOI)
def test_atoi(spec: str, text: str, expected: int) -> None:
    assert atoi(text) == expected


@given(st.integers(-(2**31), 2**31 - 1))
def test_atoi_int_range_roundtrip(value: int) -> None:
    # spec 1.2: atoi reads decimal ints exactly.
    assert atoi(str(value)) == value
    assert atoi(f"  {value}junk") == value


# --------------------------------------------------------------------------
# parse_domid: strtoul base 10, no junk, <= 65535; "" is 0
# --------------------------------------------------------------------------

PARSE_DOMID = [
    # (spec, text, expected domid or EINVAL)
    ("spec 1.2", "0", 0),
    ("spec 1.2", "1", 1),
    ("spec 1.2", "65535", 65535),
    ("spec 1.2", "32752", 32752),  # DOMID_SELF parses like any number
    ("spec 1.2", "", 0),  # empty string: strtoul gives 0, endptr at NUL
    ("spec 1.2", "007", 7),  # base 10, leading zeros fine
    ("spec 1.2", " 5", 5),  # strtoul skips leading whitespace
    ("spec 1.2", "+5", 5),
    ("spec 1.2", "-0", 0),
    ("spec 1.2", "-18446744073709551615", 1),  # strtoul negates modulo 2**64
    ("spec 1.2", "65536", EINVAL),
    ("spec 1.2", "100000", EINVAL),
    ("spec 1.2", "1x", EINVAL),  # junk after the number
    ("spec 1.2", "5 ", EINVAL),  # trailing space is junk too
    ("spec 1.2", "-1", EINVAL),  # ULONG_MAX > 65535
    ("spec 1.2", "0x10", EINVAL),  # base 10 only
    ("spec 1.2", "x", EINVAL),  # no digits: endptr = input, not at NUL
    ("spec 1.2", " ", EINVAL),
    ("spec 1.2", "-", EINVAL),
    ("spec 1.2", "+", EINVAL),
    ("spec 1.2", "1.0", EINVAL),
    ("spec 1.2", "\u0661", EINVAL),  # non-ASCII digit
    ("spec 1.2", "18446744073709551616", EINVAL),  # overflow: ULONG_MAX
    ("spec 1.2", "-18446744073709551616", EINVAL),  # overflow: ULONG_MAX
]


@pytest.mark.parametrize(("spec", "text", "expected"), PARSE_DOMID, ids=_ids(PARSE_DOMID))
def test_parse_domid(spec: str, text: str, expected: int | str) -> None:
    _expect(parse_domid, text, expected)


@given(st.integers(0, 65535))
def test_parse_domid_accepts_every_domid(domid: int) -> None:
    # spec 1.2: every value 0..65535 in base 10.
    assert parse_domid(str(domid)) == domid


@given(st.integers(65536, 2**70))
def test_parse_domid_rejects_every_larger_value(value: int) -> None:
    # spec 1.2: values above 65535 give EINVAL.
    with pytest.raises(XenstoreError):
        parse_domid(str(value))


STRTOUL10 = [
    # (spec, text, (value, rest)) -- C strtoul(s, &end, 10)
    ("spec 1.2", "12", (12, "")),
    ("spec 1.2", " 12x", (12, "x")),
    ("spec 1.2", "x", (0, "x")),  # no conversion: end = start of input
    ("spec 1.2", " x", (0, " x")),
    ("spec 1.2", "-1", (ULONG_MAX, "")),
    ("spec 1.2", "-", (0, "-")),
    ("spec 1.2", "", (0, "")),
    ("spec 1.2", "18446744073709551615", (ULONG_MAX, "")),
    ("spec 1.2", "18446744073709551616", (ULONG_MAX, "")),
    ("spec 1.2", "0x10", (0, "x10")),
]


@pytest.mark.parametrize(("spec", "text", "expected"), STRTOUL10, ids=_ids(STRTOUL10))
def test_strtoul10(spec: str, text: str, expected: tuple[int, str]) -> None:
    assert strtoul10(text) == expected


# --------------------------------------------------------------------------
# strtol base 0 (SET_PERMS domids: "r0x10", "r010" are legal)
# --------------------------------------------------------------------------

STRTOL0 = [
    # (spec, text, (value, rest))
    ("spec 1.5", "16", (16, "")),
    ("spec 1.5", "0x10", (16, "")),
    ("spec 1.5", "0X1f", (31, "")),
    ("spec 1.5", "010", (8, "")),
    ("spec 1.5", "0", (0, "")),
    ("spec 1.5", "-1", (-1, "")),
    ("spec 1.5", "+5", (5, "")),
    ("spec 1.5", "-0x10", (-16, "")),
    ("spec 1.5", " \t12", (12, "")),
    ("spec 1.5", "12abc", (12, "abc")),  # junk rest returned
    ("spec 1.5", "0x1g", (1, "g")),
    ("spec 1.5", "08", (0, "8")),  # octal: 8 is not a digit
    ("spec 1.5", "0779", (63, "9")),
    ("spec 1.5", "0x", (0, "x")),  # "0" parsed, "x" left
    ("spec 1.5", "0xg", (0, "xg")),
    ("spec 1.5", "x", (0, "x")),  # no conversion: rest is the whole input
    ("spec 1.5", " x", (0, " x")),
    ("spec 1.5", "-", (0, "-")),
    ("spec 1.5", "", (0, "")),
    ("spec 1.5", "9223372036854775807", (LONG_MAX, "")),
    ("spec 1.5", "9223372036854775808", (LONG_MAX, "")),  # saturates
    ("spec 1.5", "-9223372036854775809", (LONG_MIN, "")),
    ("spec 1.5", "0xffffffffffffffffff", (LONG_MAX, "")),
]


@pytest.mark.parametrize(("spec", "text", "expected"), STRTOL0, ids=_ids(STRTOL0))
def test_strtol0(spec: str, text: str, expected: tuple[int, str]) -> None:
    assert strtol0(text) == expected
