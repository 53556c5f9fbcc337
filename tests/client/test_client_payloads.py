"""The client's wire formats, without any I/O."""

import pytest

from pyxenstored.client.errors import MalformedReply
from pyxenstored.client.payloads import (
    error_name,
    one_string,
    parse_bool,
    parse_directory_part,
    parse_uint,
    split_strings,
    strings_payload,
    write_payload,
)


def test_strings_payload_terminates_every_argument() -> None:
    assert strings_payload("/a", "tok") == b"/a\0tok\0"
    assert strings_payload() == b""
    assert strings_payload(b"raw", "x") == b"raw\0x\0"


def test_strings_are_latin1_so_every_byte_round_trips() -> None:
    assert strings_payload("/\xe9\xff") == b"/\xe9\xff\0"
    assert split_strings(b"/\xe9\xff\0") == ["/\xe9\xff"]


@pytest.mark.parametrize("bad", ["/a\0b", b"x\0"])
def test_nul_inside_an_argument_is_refused(bad: str | bytes) -> None:
    with pytest.raises(ValueError, match="NUL"):
        strings_payload(bad)


def test_non_latin1_path_is_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        strings_payload("/\u20ac")


def test_write_payload_value_is_raw_and_unterminated() -> None:
    assert write_payload("/a", b"v\0w") == b"/a\0v\0w"
    assert write_payload("/a", b"") == b"/a\0"
    assert write_payload("/a", "\u20ac") == b"/a\0\xe2\x82\xac"


def test_split_strings_ignores_bytes_after_last_nul() -> None:
    assert split_strings(b"") == []
    assert split_strings(b"a\0b\0") == ["a", "b"]
    assert split_strings(b"a\0junk") == ["a"]


def test_one_string_tolerates_missing_terminator() -> None:
    assert one_string(b"/local/domain/3\0") == "/local/domain/3"
    assert one_string(b"OK") == "OK"
    assert error_name(b"ENOENT\0") == "ENOENT"


def test_parse_uint() -> None:
    assert parse_uint(b"14\0", "x") == 14
    assert parse_uint(b"4294967295\0", "x") == 2**32 - 1
    for bad in (b"\0", b"-1\0", b"1a\0", b" 1\0"):
        with pytest.raises(MalformedReply):
            parse_uint(bad, "x")


def test_parse_bool() -> None:
    assert parse_bool(b"T\0", "x") is True
    assert parse_bool(b"F\0", "x") is False
    with pytest.raises(MalformedReply):
        parse_bool(b"OK\0", "x")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"7\0a\0bb\0\0", (7, ["a", "bb"], True)),  # whole list in one chunk
        (b"7\0a\0bb\0", (7, ["a", "bb"], False)),  # more to come
        (b"7\0\0", (7, [], True)),  # offset past the end / no children
        (b"123456\0c\0\0", (123456, ["c"], True)),
    ],
)
def test_parse_directory_part(payload: bytes, expected: tuple[int, list[str], bool]) -> None:
    assert parse_directory_part(payload) == expected


@pytest.mark.parametrize("payload", [b"", b"7", b"x\0a\0\0"])
def test_parse_directory_part_rejects_missing_generation(payload: bytes) -> None:
    with pytest.raises(MalformedReply):
        parse_directory_part(payload)
