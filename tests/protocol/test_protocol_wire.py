"""Header, packet encoding, op numbers and error names (spec 1.1, 1.3, 1.4).

Every table row starts with the spec section it checks.
"""

import struct
import sys

import attrs
import pytest

import pyxenstored.protocol as protocol
from pyxenstored.protocol.errors import ERROR_NAMES, ProtocolError, XenstoreError
from pyxenstored.protocol.ops import INVALID, TYPE_COUNT, Op
from pyxenstored.protocol.wire import (
    HEADER,
    HEADER_SIZE,
    OK_PAYLOAD,
    PAYLOAD_MAX,
    Packet,
    encode,
    error_payload,
    watch_event,
)

U32_MAX = 0xFFFFFFFF


def _ids(rows: list[tuple]) -> list[str]:
    return [f"{row[0]}-{i}" for i, row in enumerate(rows)]


# --------------------------------------------------------------------------
# spec 1.1: the 16-byte header, native byte order
# --------------------------------------------------------------------------


def test_header_is_16_bytes_of_four_u32() -> None:
    # spec 1.1: struct xsd_sockmsg is four u32 fields, 16 bytes, no padding.
    assert HEADER_SIZE == 16
    assert HEADER.size == 16
    assert PAYLOAD_MAX == 4096


def test_header_field_offsets_in_native_byte_order() -> None:
    # spec 1.1: type@0, req_id@4, tx_id@8, len@12, native CPU byte order.
    raw = encode(0x01020304, 0x05060708, 0x090A0B0C, b"xyz")
    assert len(raw) == HEADER_SIZE + 3
    fields = [int.from_bytes(raw[i : i + 4], sys.byteorder) for i in range(0, 16, 4)]
    assert fields == [0x01020304, 0x05060708, 0x090A0B0C, 3]
    assert raw[:16] == struct.pack("=IIII", 0x01020304, 0x05060708, 0x090A0B0C, 3)
    assert raw[16:] == b"xyz"


@pytest.mark.skipif(sys.byteorder != "little", reason="checks the little-endian layout")
def test_header_little_endian_host_layout() -> None:
    # spec 1.1: in practice little-endian (x86, Arm).
    raw = encode(Op.WRITE, 1, 2, b"ab")
    assert raw == b"\x0b\0\0\0\x01\0\0\0\x02\0\0\0\x02\0\0\0ab"


ROUNDTRIP = [
    # (spec, type, req_id, tx_id, payload)
    ("spec 1.1", Op.READ, 0, 0, b"/a\0"),
    ("spec 1.1", Op.CONTROL, 0, 0, b""),
    ("spec 1.1", Op.WRITE, 7, 3, b"/a\0value\0with\0nuls"),
    ("spec 1.1", U32_MAX, U32_MAX, U32_MAX, b"\xff" * 5),
    ("spec 1.1", Op.DIRECTORY, 0x80000000, 0x40000000, bytes(range(256))),
    ("spec 1.1", Op.WRITE, 1, 1, b"x" * PAYLOAD_MAX),
    ("spec 1.3", INVALID, 42, 0, b"junk"),
    ("spec 1.3", TYPE_COUNT, 42, 0, b"\0"),
]


@pytest.mark.parametrize(
    ("spec", "type_", "req_id", "tx_id", "payload"), ROUNDTRIP, ids=_ids(ROUNDTRIP)
)
def test_header_encode_decode_roundtrip(
    spec: str, type_: int, req_id: int, tx_id: int, payload: bytes
) -> None:
    raw = encode(type_, req_id, tx_id, payload)
    assert HEADER.unpack_from(raw) == (type_, req_id, tx_id, len(payload))
    assert raw[HEADER_SIZE:] == payload


@pytest.mark.parametrize(
    ("spec", "type_", "req_id", "tx_id", "payload"), ROUNDTRIP, ids=_ids(ROUNDTRIP)
)
def test_packet_encode_matches_encode(
    spec: str, type_: int, req_id: int, tx_id: int, payload: bytes
) -> None:
    packet = Packet(type_, req_id, tx_id, payload)
    assert packet.encode() == encode(type_, req_id, tx_id, payload)
    type2, req2, tx2, length = HEADER.unpack_from(packet.encode())
    assert Packet(type2, req2, tx2, packet.encode()[HEADER_SIZE:][:length]) == packet


def test_packet_is_frozen() -> None:
    # spec 1.1: a packet's header fields are what was received; no mutation.
    packet = Packet(Op.READ, 1, 0, b"/\0")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        packet.req_id = 2  # type: ignore[misc]


@pytest.mark.parametrize("value", [-1, U32_MAX + 1])
def test_encode_rejects_fields_outside_u32(value: int) -> None:
    # spec 1.1: all four header fields are u32.
    with pytest.raises(struct.error):
        encode(value, 0, 0, b"")
    with pytest.raises(struct.error):
        encode(0, value, 0, b"")


# --------------------------------------------------------------------------
# spec 1.2 / 1.4: standard reply payloads
# --------------------------------------------------------------------------

REPLY_PAYLOADS = [
    ("spec 1.2", OK_PAYLOAD, b"OK\0"),
    ("spec 1.4", error_payload("ENOENT"), b"ENOENT\0"),
    ("spec 1.4", error_payload("E2BIG"), b"E2BIG\0"),
    ("spec 1.4", error_payload("EINVAL"), b"EINVAL\0"),
]


@pytest.mark.parametrize(("spec", "actual", "expected"), REPLY_PAYLOADS, ids=_ids(REPLY_PAYLOADS))
def test_standard_reply_payloads(spec: str, actual: bytes, expected: bytes) -> None:
    assert actual == expected


WATCH_EVENTS = [
    # (spec, path, token, expected payload)
    ("spec 5.1", "/a/b", "tok", b"/a/b\0tok\0"),
    ("spec 5.1", "/a", "", b"/a\0\0"),  # the token may be empty
    ("spec 5.1", "@introduceDomain", "t", b"@introduceDomain\0t\0"),
    ("spec 5.1", "rel/path", "0x1234", b"rel/path\x000x1234\0"),
    # Tokens are any NUL-free byte string; args.py decodes wire strings as
    # latin-1, so the event must re-encode them byte for byte.
    pytest.param(
        "spec 5.1",
        "/a",
        "\xff\xe9",
        b"/a\0\xff\xe9\0",
        id="spec 5.1-latin1-token",
    ),
]


@pytest.mark.parametrize(("spec", "path", "token", "payload"), WATCH_EVENTS)
def test_watch_event(spec: str, path: str, token: str, payload: bytes) -> None:
    # spec 1.1: WATCH_EVENT header has req_id=0 and tx_id=0.
    raw = watch_event(path, token)
    assert HEADER.unpack_from(raw) == (Op.WATCH_EVENT, 0, 0, len(payload))
    assert raw[HEADER_SIZE:] == payload


# --------------------------------------------------------------------------
# spec 1.3: message type numbers (xs_wire.h)
# --------------------------------------------------------------------------

OPS = [
    ("spec 1.3", "CONTROL", 0),
    ("spec 1.3", "DIRECTORY", 1),
    ("spec 1.3", "READ", 2),
    ("spec 1.3", "GET_PERMS", 3),
    ("spec 1.3", "WATCH", 4),
    ("spec 1.3", "UNWATCH", 5),
    ("spec 1.3", "TRANSACTION_START", 6),
    ("spec 1.3", "TRANSACTION_END", 7),
    ("spec 1.3", "INTRODUCE", 8),
    ("spec 1.3", "RELEASE", 9),
    ("spec 1.3", "GET_DOMAIN_PATH", 10),
    ("spec 1.3", "WRITE", 11),
    ("spec 1.3", "MKDIR", 12),
    ("spec 1.3", "RM", 13),
    ("spec 1.3", "SET_PERMS", 14),
    ("spec 1.3", "WATCH_EVENT", 15),
    ("spec 1.3", "ERROR", 16),
    ("spec 1.3", "IS_DOMAIN_INTRODUCED", 17),
    ("spec 1.3", "RESUME", 18),
    ("spec 1.3", "SET_TARGET", 19),
    ("spec 1.3", "RESTRICT", 20),
    ("spec 1.3", "RESET_WATCHES", 21),
    ("spec 1.3", "DIRECTORY_PART", 22),
    ("spec 1.3", "GET_FEATURE", 23),
    ("spec 1.3", "SET_FEATURE", 24),
    ("spec 1.3", "GET_QUOTA", 25),
    ("spec 1.3", "SET_QUOTA", 26),
]


@pytest.mark.parametrize(("spec", "name", "number"), OPS, ids=[row[1] for row in OPS])
def test_op_numbers(spec: str, name: str, number: int) -> None:
    assert Op[name] == number
    assert Op(number).name == name


def test_op_table_is_complete_and_dense() -> None:
    # spec 1.3: types 0..26 exist; XS_TYPE_COUNT=27; XS_INVALID=0xffff.
    assert len(Op) == len(OPS) == TYPE_COUNT == 27
    assert sorted(int(op) for op in Op) == list(range(TYPE_COUNT))
    assert INVALID == 0xFFFF
    assert INVALID not in set(Op)


# --------------------------------------------------------------------------
# spec 1.4: error names
# --------------------------------------------------------------------------

ERRORS = [
    # (spec, index in xsd_errors, name)
    ("spec 1.4", 0, "EINVAL"),
    ("spec 1.4", 1, "EACCES"),
    ("spec 1.4", 2, "EEXIST"),
    ("spec 1.4", 3, "EISDIR"),
    ("spec 1.4", 4, "ENOENT"),
    ("spec 1.4", 5, "ENOMEM"),
    ("spec 1.4", 6, "ENOSPC"),
    ("spec 1.4", 7, "EIO"),
    ("spec 1.4", 8, "ENOTEMPTY"),
    ("spec 1.4", 9, "ENOSYS"),
    ("spec 1.4", 10, "EROFS"),
    ("spec 1.4", 11, "EBUSY"),
    ("spec 1.4", 12, "EAGAIN"),
    ("spec 1.4", 13, "EISCONN"),
    ("spec 1.4", 14, "E2BIG"),
    ("spec 1.4", 15, "EPERM"),
]


@pytest.mark.parametrize(("spec", "index", "name"), ERRORS, ids=[row[2] for row in ERRORS])
def test_error_names_order_matches_xs_wire_h(spec: str, index: int, name: str) -> None:
    assert ERROR_NAMES[index] == name


def test_error_names_table_length() -> None:
    # spec 1.4: 16 entries; new names may only be appended.
    assert len(ERROR_NAMES) == len(ERRORS) == 16
    assert len(set(ERROR_NAMES)) == 16


@pytest.mark.parametrize(("spec", "index", "name"), ERRORS, ids=[row[2] for row in ERRORS])
def test_xenstore_error_keeps_known_names(spec: str, index: int, name: str) -> None:
    error = XenstoreError(name)
    assert error.name == name
    assert isinstance(error, Exception)


UNKNOWN_ERRORS = [
    # spec 1.4: any errno not in the table crosses the wire as EINVAL.
    ("spec 1.4", "EBADF"),  # from memreport
    ("spec 1.4", "EQUOTA"),  # oxenstored's name; clients see EINVAL
    ("spec 1.4", "einval"),  # names are case-sensitive
    ("spec 1.4", "ENOENT\0"),
    ("spec 1.4", " ENOENT"),
    ("spec 1.4", ""),
    ("spec 1.4", "OK"),
]


@pytest.mark.parametrize(("spec", "name"), UNKNOWN_ERRORS, ids=_ids(UNKNOWN_ERRORS))
def test_xenstore_error_maps_unknown_names_to_einval(spec: str, name: str) -> None:
    assert XenstoreError(name).name == "EINVAL"


def test_protocol_error_is_distinct_from_xenstore_error() -> None:
    # spec 1.1: a framing violation closes the connection, it is not an ERROR reply.
    assert not issubclass(ProtocolError, XenstoreError)
    assert not issubclass(XenstoreError, ProtocolError)


def test_package_reexports() -> None:
    assert protocol.Decoder.__name__ == "Decoder"
    assert protocol.ERROR_NAMES is ERROR_NAMES
    assert protocol.ProtocolError is ProtocolError
    assert protocol.XenstoreError is XenstoreError
    assert protocol.Op is Op
    assert protocol.HEADER_SIZE == HEADER_SIZE
    assert protocol.PAYLOAD_MAX == PAYLOAD_MAX
    assert protocol.Packet is Packet
    assert protocol.encode is encode
