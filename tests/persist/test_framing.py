"""persist.framing: length + CRC records, and telling a torn tail from corruption."""

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.persist import framing
from pyxenstored.persist.framing import HEADER_SIZE, Damage, DamageKind, Scan, frame, scan

PAYLOADS = [b"first", b"", b"x" * 300, b"\x00" * 9, b"last one"]
payload_lists = st.lists(st.binary(max_size=64), max_size=8)


def boundaries(payloads: list[bytes]) -> list[int]:
    """Offsets where each record starts, and the end of the stream."""
    offsets = [0]
    for payload in payloads:
        offsets.append(offsets[-1] + HEADER_SIZE + len(payload))
    return offsets


def test_frame_layout() -> None:
    length = struct.pack("<I", 3)
    assert frame(b"abc") == length + struct.pack("<I", zlib.crc32(length + b"abc")) + b"abc"


def test_empty_payload_round_trips() -> None:
    assert len(frame(b"")) == HEADER_SIZE
    assert scan(frame(b"")) == Scan([b""], HEADER_SIZE, None)


def test_empty_stream() -> None:
    assert scan(b"") == Scan([], 0, None)


@given(payload_lists)
def test_round_trip(payloads: list[bytes]) -> None:
    data = b"".join(frame(p) for p in payloads)
    assert scan(data) == Scan(payloads, len(data), None)
    assert scan(memoryview(data)) == Scan(payloads, len(data), None)


def test_every_prefix_is_the_complete_records_plus_a_torn_tail() -> None:
    data = b"".join(frame(p) for p in PAYLOADS)
    starts = boundaries(PAYLOADS)
    for cut in range(len(data) + 1):
        complete = sum(1 for end in starts[1:] if end <= cut)
        found = scan(data[:cut])
        assert found.records == PAYLOADS[:complete]
        assert found.end == starts[complete]
        if cut == starts[complete]:
            assert found.damage is None
        else:
            assert found.damage == Damage("torn", starts[complete])


@given(payload_lists, st.data())
def test_any_prefix_of_a_random_stream(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cut = data.draw(st.integers(0, len(stream)))
    starts = boundaries(payloads)
    complete = sum(1 for end in starts[1:] if end <= cut)
    found = scan(stream[:cut])
    assert found.records == payloads[:complete]
    assert found.damage == (None if cut == starts[complete] else Damage("torn", starts[complete]))


def expected_flip_kind(data: bytes, start: int, position: int, is_last: bool) -> DamageKind:
    """A flipped length byte moves the record's declared end; past the data it is torn."""
    if is_last:
        return "torn"
    if position < start + 4:
        (length,) = struct.unpack_from("<I", data, start)
        if length > framing.MAX_RECORD or start + HEADER_SIZE + length >= len(data):
            return "torn"
    return "corrupt"


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_is_caught_at_its_record(mask: int) -> None:
    data = b"".join(frame(p) for p in PAYLOADS)
    starts = boundaries(PAYLOADS)
    for position in range(len(data)):
        index = max(i for i, start in enumerate(starts[:-1]) if start <= position)
        damaged = bytearray(data)
        damaged[position] ^= mask
        found = scan(bytes(damaged))
        assert found.records == PAYLOADS[:index], position
        assert found.end == starts[index]
        is_last = index == len(PAYLOADS) - 1
        kind = expected_flip_kind(bytes(damaged), starts[index], position, is_last)
        assert found.damage == Damage(kind, starts[index]), position


def test_flipped_payload_byte_of_a_middle_record_is_corrupt() -> None:
    data = bytearray(frame(b"aaaa") + frame(b"bbbb") + frame(b"cccc"))
    data[HEADER_SIZE + 4 + HEADER_SIZE + 1] ^= 0x20
    assert scan(bytes(data)) == Scan([b"aaaa"], HEADER_SIZE + 4, Damage("corrupt", HEADER_SIZE + 4))


def test_zero_header_does_not_validate() -> None:
    assert zlib.crc32(bytes(4)) != 0
    assert scan(bytes(HEADER_SIZE)) == Scan([], 0, Damage("torn", 0))


@pytest.mark.parametrize("zeros", [1, 7, 8, 9, 16, 4096])
def test_zero_filled_tail_is_torn(zeros: int) -> None:
    data = frame(b"kept") + frame(b"")
    found = scan(data + bytes(zeros))
    assert found == Scan([b"kept", b""], len(data), Damage("torn", len(data)))


def test_all_zero_file_is_torn() -> None:
    assert scan(bytes(100)) == Scan([], 0, Damage("torn", 0))


def test_bad_record_followed_by_data_is_corrupt_even_behind_zeros() -> None:
    bad = bytearray(frame(b"abc"))
    bad[-1] ^= 1
    data = frame(b"ok") + bytes(bad) + bytes(20) + frame(b"later")
    assert scan(data).damage == Damage("corrupt", HEADER_SIZE + 2)


def test_bad_record_followed_only_by_zeros_is_torn() -> None:
    """A group commit cut by a crash: the first record half there, the rest zeros."""
    partial = bytearray(frame(b"abcdef"))
    partial[-3:] = bytes(3)
    data = frame(b"ok") + bytes(partial) + bytes(2 * HEADER_SIZE + 10)
    assert scan(data) == Scan([b"ok"], HEADER_SIZE + 2, Damage("torn", HEADER_SIZE + 2))


def test_absurd_length_is_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    big = frame(b"12345")
    monkeypatch.setattr(framing, "MAX_RECORD", 4)
    with pytest.raises(ValueError, match="MAX_RECORD"):
        frame(b"12345")
    assert scan(frame(b"ok") + big) == Scan([b"ok"], 10, Damage("torn", 10))
    # Declared within the data but over the limit, with a record after it.
    assert scan(big + frame(b"1234")).damage == Damage("corrupt", 0)


def test_length_past_the_end_is_torn() -> None:
    header = struct.pack("<I", 1000)
    data = frame(b"ok") + header + struct.pack("<I", zlib.crc32(header)) + b"short"
    assert scan(data) == Scan([b"ok"], 10, Damage("torn", 10))
