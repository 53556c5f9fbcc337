"""Decoder and engine robustness under generated input (issue 4, part 3)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.codec import check_decoder, check_engine
from fuzz.strategies import byte_streams, chunked, packets
from pyxenstored.protocol.wire import Packet

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(byte_streams())
def test_decoder_any_chunking(chunks: list[bytes]) -> None:
    check_decoder(chunks)


@FAST
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=8))
def test_decoder_random_bytes(data: bytes, cuts: list[int]) -> None:
    check_decoder(chunked(data, cuts))


def test_decoder_error_after_good_packets() -> None:
    good = Packet(2, 1, 0, b"/\0").encode()
    bad = Packet(2, 2, 0, b"").encode()[:12] + (4097).to_bytes(4, "little")
    assert len(check_decoder([good + bad + good])) == 1


@FAST
@given(st.lists(st.tuples(st.integers(0, 1), packets(small=True)), max_size=30))
def test_engine_never_raises_narrow(seq: list[tuple[int, Packet]]) -> None:
    check_engine(seq)


@FAST
@given(st.lists(st.tuples(st.integers(0, 1), packets()), max_size=10))
def test_engine_never_raises_wide(seq: list[tuple[int, Packet]]) -> None:
    check_engine(seq)
