"""Incremental framing (spec 1.1; XSA-72 and XSA-420 in spec 10).

Every table row starts with the spec section it checks.
"""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER_SIZE, PAYLOAD_MAX, Packet, encode

U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


def header(type_: int, req_id: int, tx_id: int, length: int) -> bytes:
    """A raw header whose len field need not match any payload."""
    return struct.pack("=IIII", type_, req_id, tx_id, length)


def _ids(rows: list[tuple]) -> list[str]:
    return [f"{row[0]}-{i}" for i, row in enumerate(rows)]


# --------------------------------------------------------------------------
# Whole packets
# --------------------------------------------------------------------------

SINGLE = [
    # (spec, packet)
    ("spec 1.1", Packet(Op.READ, 1, 0, b"/a\0")),
    ("spec 1.1", Packet(Op.TRANSACTION_START, 2, 0, b"")),  # zero-length payload
    ("spec 1.3", Packet(Op.RESET_WATCHES, 0, 0, b"")),
    ("spec 1.1", Packet(Op.WRITE, 0xFFFFFFFF, 0xFFFFFFFF, b"/a\0\0\0binary\xff")),
    ("spec 1.1", Packet(Op.WRITE, 3, 4, b"v" * PAYLOAD_MAX)),  # exactly 4096: accepted
    ("spec 1.1", Packet(Op.WRITE, 3, 4, b"v" * (PAYLOAD_MAX - 1))),
    ("spec 1.3", Packet(0xFFFF, 5, 0, b"x\0")),  # INVALID type: framing still works
    ("spec 1.3", Packet(0xFFFFFFFF, 5, 0, b"")),
]


@pytest.mark.parametrize(("spec", "packet"), SINGLE, ids=_ids(SINGLE))
def test_single_packet_whole(spec: str, packet: Packet) -> None:
    decoder = Decoder()
    assert decoder.feed(packet.encode()) == [packet]
    assert decoder.pending == b""


@pytest.mark.parametrize(("spec", "packet"), SINGLE, ids=_ids(SINGLE))
def test_single_packet_byte_by_byte(spec: str, packet: Packet) -> None:
    decoder = Decoder()
    raw = packet.encode()
    out: list[Packet] = []
    for i in range(len(raw)):
        got = decoder.feed(raw[i : i + 1])
        if i < len(raw) - 1:
            assert got == []
            assert decoder.pending == raw[: i + 1]
        out += got
    assert out == [packet]
    assert decoder.pending == b""


def test_many_zero_length_packets_in_one_feed() -> None:
    # spec 1.1: len=0 is a complete packet right after its header.
    packets = [Packet(Op.TRANSACTION_START, i, 0, b"") for i in range(50)]
    decoder = Decoder()
    assert decoder.feed(b"".join(p.encode() for p in packets)) == packets
    assert decoder.pending == b""


def test_empty_feed() -> None:
    # spec 1.1: no bytes, no packets.
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert decoder.pending == b""


# --------------------------------------------------------------------------
# Partial header / partial payload / pending
# --------------------------------------------------------------------------

PARTIAL = [
    # (spec, stream, expected packets, expected pending)
    ("spec 1.1", header(2, 1, 0, 3)[:1], [], header(2, 1, 0, 3)[:1]),
    ("spec 1.1", header(2, 1, 0, 3)[:15], [], header(2, 1, 0, 3)[:15]),
    ("spec 1.1", header(2, 1, 0, 3), [], header(2, 1, 0, 3)),  # header, no payload yet
    ("spec 1.1", header(2, 1, 0, 3) + b"/a", [], header(2, 1, 0, 3) + b"/a"),
    ("spec 1.1", header(2, 1, 0, 3) + b"/a\0", [Packet(2, 1, 0, b"/a\0")], b""),
    (
        "spec 1.1",
        encode(2, 1, 0, b"/a\0") + encode(1, 2, 0, b"/\0") + header(11, 3, 0, 10) + b"/x\0",
        [Packet(2, 1, 0, b"/a\0"), Packet(1, 2, 0, b"/\0")],
        header(11, 3, 0, 10) + b"/x\0",
    ),
    (
        "spec 1.1",
        encode(6, 1, 0, b"") + header(6, 2, 0, 0)[:7],
        [Packet(6, 1, 0, b"")],
        header(6, 2, 0, 0)[:7],
    ),
    # A header announcing exactly PAYLOAD_MAX waits for all of it.
    (
        "spec 1.1",
        header(11, 1, 0, PAYLOAD_MAX) + b"x" * (PAYLOAD_MAX - 1),
        [],
        header(11, 1, 0, PAYLOAD_MAX) + b"x" * (PAYLOAD_MAX - 1),
    ),
]


@pytest.mark.parametrize(("spec", "stream", "packets", "pending"), PARTIAL, ids=_ids(PARTIAL))
def test_partial_input_stays_pending(
    spec: str, stream: bytes, packets: list[Packet], pending: bytes
) -> None:
    decoder = Decoder()
    assert decoder.feed(stream) == packets
    assert decoder.pending == pending


@pytest.mark.parametrize(("spec", "stream", "packets", "pending"), PARTIAL, ids=_ids(PARTIAL))
def test_pending_survives_a_new_decoder(
    spec: str, stream: bytes, packets: list[Packet], pending: bytes
) -> None:
    # spec 8.2: a partial packet is carried across live update via ``pending``.
    first = Decoder()
    assert first.feed(stream) == packets
    second = Decoder(first.pending)
    assert second.pending == pending
    # Both decoders now behave identically on whatever comes next; NUL bytes
    # complete any partial packet and then frame as zero-length packets.
    continuation = b"\0" * (PAYLOAD_MAX + 2 * HEADER_SIZE)
    assert second.feed(continuation) == first.feed(continuation)
    assert second.pending == first.pending


def test_partial_payload_then_rest() -> None:
    # spec 1.1: the payload may arrive in pieces.
    packet = Packet(Op.WRITE, 9, 1, b"/k\0" + b"v" * 100)
    raw = packet.encode()
    decoder = Decoder()
    assert decoder.feed(raw[:20]) == []
    assert decoder.pending == raw[:20]
    assert decoder.feed(raw[20:60]) == []
    assert decoder.pending == raw[:60]
    assert decoder.feed(raw[60:] + raw[:3]) == [packet]
    assert decoder.pending == raw[:3]


def test_pending_returns_a_copy() -> None:
    decoder = Decoder()
    decoder.feed(b"abc")
    pending = decoder.pending
    assert isinstance(pending, bytes)
    decoder.feed(b"d")
    assert pending == b"abc"
    assert decoder.pending == b"abcd"


def test_feed_does_not_keep_a_reference_to_the_input() -> None:
    decoder = Decoder()
    data = bytearray(header(2, 1, 0, 3))
    decoder.feed(data)
    data[:] = b"\xff" * len(data)
    assert decoder.feed(b"/a\0") == [Packet(2, 1, 0, b"/a\0")]


# --------------------------------------------------------------------------
# Oversized len: XSA-72 (len 4097..0xFFFFFFFF) and XSA-420 (bits 31/30 set)
# --------------------------------------------------------------------------

OVERSIZED = [
    # (spec, len field)
    ("spec 1.1 XSA-72", PAYLOAD_MAX + 1),
    ("spec 1.1 XSA-72", PAYLOAD_MAX + 2),
    ("spec 1.1 XSA-72", 65536),
    ("spec 1.1 XSA-72", 0xFFFFFFFF),
    ("spec 1.1 XSA-420", 0x80000000),  # bit 31 only
    ("spec 1.1 XSA-420", 0x40000000),  # bit 30 only
    ("spec 1.1 XSA-420", 0xC0000000),  # bits 31 and 30
    ("spec 1.1 XSA-420", 0x80000010),  # bit 31 + a small value a 31-bit truncation would accept
    ("spec 1.1 XSA-420", 0x40000010),  # bit 30 + a small value
    ("spec 1.1 XSA-420", 0x80001000),  # bit 31 + exactly 4096
    ("spec 1.1 XSA-420", 0x7FFFFFFF),
]


@pytest.mark.parametrize(("spec", "length"), OVERSIZED, ids=_ids(OVERSIZED))
def test_oversized_len_is_protocol_error(spec: str, length: int) -> None:
    # C checks len as soon as the header is complete, before any payload.
    decoder = Decoder()
    with pytest.raises(ProtocolError):
        decoder.feed(header(Op.WRITE, 1, 0, length))


@pytest.mark.parametrize(("spec", "length"), OVERSIZED, ids=_ids(OVERSIZED))
def test_oversized_len_detected_when_header_completes(spec: str, length: int) -> None:
    raw = header(Op.WRITE, 1, 0, length) + b"x" * 32
    decoder = Decoder()
    assert decoder.feed(raw[: HEADER_SIZE - 1]) == []
    with pytest.raises(ProtocolError):
        decoder.feed(raw[HEADER_SIZE - 1 :])


@pytest.mark.parametrize(("spec", "length"), OVERSIZED, ids=_ids(OVERSIZED))
def test_oversized_len_after_valid_packets_fed_separately(spec: str, length: int) -> None:
    # spec 1.1: packets before the bad header are complete requests.
    good = [Packet(Op.READ, 1, 0, b"/a\0"), Packet(Op.TRANSACTION_START, 2, 0, b"")]
    decoder = Decoder()
    assert decoder.feed(b"".join(p.encode() for p in good)) == good
    with pytest.raises(ProtocolError):
        decoder.feed(header(Op.WRITE, 3, 0, length))


def _delivered_before_error(decoder: Decoder, stream: bytes) -> list[Packet]:
    """Packets the decoder hands out before it reports ProtocolError.

    Accepts either API a fix might choose: return the complete packets and
    raise on the next ``feed``, or attach them to the exception as ``packets``.
    """
    delivered: list[Packet] = []
    try:
        delivered += decoder.feed(stream)
        delivered += decoder.feed(b"")
    except ProtocolError as error:
        delivered += getattr(error, "packets", [])
        return delivered
    raise AssertionError("no ProtocolError")


@pytest.mark.parametrize(("spec", "length"), OVERSIZED[:1] + OVERSIZED[4:5], ids=["4097", "bit31"])
def test_oversized_len_after_valid_packets_in_same_chunk(spec: str, length: int) -> None:
    # spec 1.1: C reads and processes one request at a time, so requests
    # before the bad header are handled before the connection is dropped;
    # the result must not depend on how the stream was chunked.
    good = [Packet(Op.WRITE, 1, 0, b"/a\0v"), Packet(Op.RM, 2, 0, b"/b\0")]
    stream = b"".join(p.encode() for p in good) + header(Op.WRITE, 3, 0, length)
    assert _delivered_before_error(Decoder(), stream) == good


# --------------------------------------------------------------------------
# Arbitrary chunking (hypothesis)
# --------------------------------------------------------------------------

packets_strategy = st.lists(
    st.builds(
        Packet,
        type=U32,
        req_id=U32,
        tx_id=U32,
        payload=st.one_of(
            st.binary(max_size=64),
            st.binary(min_size=PAYLOAD_MAX - 8, max_size=PAYLOAD_MAX),
        ),
    ),
    max_size=12,
)


def _feed_in_chunks(stream: bytes, cuts: list[int]) -> tuple[list[Packet], bytes]:
    decoder = Decoder()
    out: list[Packet] = []
    bounds = [0, *sorted(cuts), len(stream)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        out += decoder.feed(stream[start:end])
    # Packets before a bad header come first; the error follows on the next feed.
    out += decoder.feed(b"")
    return out, decoder.pending


@given(packets=packets_strategy, data=st.data())
def test_arbitrary_chunking_equals_whole_feed(packets: list[Packet], data: st.DataObject) -> None:
    # spec 1.1: framing depends only on the bytes, never on how they arrive.
    stream = b"".join(p.encode() for p in packets)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    whole = Decoder()
    assert whole.feed(stream) == packets
    assert whole.pending == b""
    assert _feed_in_chunks(stream, cuts) == (packets, b"")


@given(packets=packets_strategy, data=st.data())
def test_arbitrary_chunking_with_truncated_tail(packets: list[Packet], data: st.DataObject) -> None:
    # spec 1.1: an incomplete trailing packet is pending, however it arrived.
    last = data.draw(
        st.builds(Packet, type=U32, req_id=U32, tx_id=U32, payload=st.binary(max_size=64)),
        label="last",
    )
    raw_last = last.encode()
    keep = data.draw(st.integers(0, len(raw_last) - 1), label="keep")
    stream = b"".join(p.encode() for p in packets) + raw_last[:keep]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    assert _feed_in_chunks(stream, cuts) == (packets, raw_last[:keep])
    # And resuming from that pending state completes the packet.
    decoder = Decoder(raw_last[:keep])
    assert decoder.feed(raw_last[keep:]) == [last]
    assert decoder.pending == b""


@given(
    packets=packets_strategy,
    length=st.one_of(
        st.integers(PAYLOAD_MAX + 1, 0xFFFFFFFF),
        st.sampled_from([0x80000000, 0x40000000, 0xC0000000, 0x80000001, 0x40000100]),
    ),
    data=st.data(),
)
def test_oversized_len_raises_whatever_the_chunking(
    packets: list[Packet], length: int, data: st.DataObject
) -> None:
    # spec 1.1 XSA-72/XSA-420: the bad header is always detected.
    stream = b"".join(p.encode() for p in packets) + header(0, 0, 0, length) + b"\0" * 8
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    with pytest.raises(ProtocolError):
        _feed_in_chunks(stream, cuts)
