"""Moving bytes through the ring in both directions (spec 7.2, 7.3).

Every table row starts with the spec section it checks.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ring_support import U32, canaries_intact, indices, pair

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet
from pyxenstored.ring.layout import RING_SIZE
from pyxenstored.ring.ring import ServerRing

# Index starting points: the u32 wrap (2**32 - s) and an ordinary buffer wrap
# (1024*k - s), so the wrap falls at every byte s of a message.
WRAPS = [("spec 7.2 u32 wrap", U32), ("spec 7.2 buffer wrap", 7 * RING_SIZE)]
MESSAGE = bytes(range(256)) * 4  # 1024 distinct-ish bytes


@pytest.mark.parametrize(("spec", "base"), WRAPS, ids=[w[0] for w in WRAPS])
@pytest.mark.parametrize("length", [1, 16, 100, 1023, 1024])
def test_guest_to_server_every_split_point(spec: str, base: int, length: int) -> None:
    # spec 7.2: a message crossing the wrap at any byte arrives intact
    message = MESSAGE[:length]
    for split in range(length + 1):
        start = (base - split) % U32
        buffer, page, server, guest = pair(req_start=start)
        assert guest.write_requests(message) == length
        assert server.read_requests() == message
        assert indices(page)[:2] == ((start + length) % U32,) * 2
        assert server.take_notify()  # spec 7.3: C notifies after reads too
        assert canaries_intact(buffer)


@pytest.mark.parametrize(("spec", "base"), WRAPS, ids=[w[0] for w in WRAPS])
@pytest.mark.parametrize("length", [1, 16, 100, 1023, 1024])
def test_server_to_guest_every_split_point(spec: str, base: int, length: int) -> None:
    # spec 7.2: a response crossing the wrap at any byte arrives intact
    message = MESSAGE[:length]
    for split in range(length + 1):
        start = (base - split) % U32
        buffer, page, server, guest = pair(rsp_start=start)
        assert server.write_responses(message) == length
        assert server.take_notify()
        assert guest.read_responses() == message
        assert indices(page)[2:] == ((start + length) % U32,) * 2
        assert canaries_intact(buffer)


near_wrap = st.one_of(
    st.integers(min_value=U32 - 3 * RING_SIZE, max_value=U32 - 1),
    st.integers(min_value=0, max_value=U32 - 1),
)


@settings(max_examples=200)
@given(
    start=near_wrap,
    sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
    data=st.data(),
)
def test_stream_round_trip_both_directions(
    start: int, sizes: list[int], data: st.DataObject
) -> None:
    # spec 7.2: any interleaving of partial writes and bounded reads preserves the stream
    buffer, page, server, guest = pair(req_start=start, rsp_start=start + 12345)
    stream = b"".join(bytes([i % 251]) * n for i, n in enumerate(sizes))
    for name, write, read in (
        ("req", guest.write_requests, server.read_requests),
        ("rsp", server.write_responses, guest.read_responses),
    ):
        sent = 0
        received = bytearray()
        while len(received) < len(stream):
            chunk = data.draw(st.integers(min_value=0, max_value=2048), label=f"{name} write")
            n = write(stream[sent : sent + chunk])
            assert 0 <= n <= min(chunk, len(stream) - sent)
            sent += n
            limit = data.draw(st.integers(min_value=1, max_value=1100), label=f"{name} read")
            got = read(limit)
            assert len(got) <= limit
            received += got
            if not n and not got:  # ring empty and writer offered nothing
                received += read(RING_SIZE)
                sent += write(stream[sent:])
        assert bytes(received) == stream
        assert sent == len(stream)
    assert canaries_intact(buffer)


PARTIAL = [
    # (spec, rsp fill before, write size, expected written)
    ("spec 7.2", 0, 1500, 1024),  # more than a ring: partial write
    ("spec 7.2", 1024, 10, 0),  # full ring: nothing written, no error
    ("spec 7.2", 1000, 100, 24),
    ("spec 7.2", 1023, 1, 1),
    ("spec 7.2", 0, 0, 0),
]


@pytest.mark.parametrize(("spec", "fill", "size", "written"), PARTIAL)
@pytest.mark.parametrize("start", [0, U32 - 600])
def test_partial_writes_when_response_ring_full(
    spec: str, fill: int, size: int, written: int, start: int
) -> None:
    buffer, page, server, guest = pair(rsp_start=start)
    page.iface.rsp_prod = (start + fill) % U32
    assert server.write_responses(b"x" * size) == written
    assert server.take_notify() == (written > 0)  # spec 7.3: notify only on progress
    assert page.iface.rsp_prod == (start + fill + written) % U32
    assert page.iface.rsp_cons == start % U32
    assert canaries_intact(buffer)


def test_partial_write_remainder_is_sent_later() -> None:
    # spec 7.2: "the remainder is sent later" -- the shell keeps data[written:]
    _, _, server, guest = pair(rsp_start=U32 - 10)
    outgoing = bytearray(Packet(Op.DIRECTORY, 1, 0, b"n\0" * 1200).encode())
    received = bytearray()
    while outgoing:
        sent = server.write_responses(outgoing)
        del outgoing[:sent]
        received += guest.read_responses(300)
    received += guest.read_responses()
    assert Decoder().feed(bytes(received)) == [Packet(Op.DIRECTORY, 1, 0, b"n\0" * 1200)]


def test_empty_ring_reads_nothing_and_needs_no_notify() -> None:
    # spec 7.3: a transfer of 0 bytes changes nothing, so nothing to signal
    _, page, server, guest = pair(req_start=77, rsp_start=99)
    before = indices(page)
    assert server.read_requests() == b""
    assert guest.read_responses() == b""
    assert indices(page) == before
    assert not server.take_notify()


def test_read_limit_leaves_the_rest_in_the_ring() -> None:
    # spec 7.2: the server may consume less than is available (back-pressure)
    _, page, server, guest = pair(req_start=U32 - 3)
    guest.write_requests(b"abcdefgh")
    assert server.read_requests(5) == b"abcde"
    assert server.read_requests(0) == b""
    assert server.read_requests() == b"fgh"


def test_fences_sit_where_c_puts_xen_mb() -> None:
    # spec 7.2: read indices -> barrier -> copy -> barrier -> publish index
    buffer, page, _, guest = pair(req_start=U32 - 2, rsp_start=5)
    seen: list[tuple[int, int, bytes]] = []

    def fence() -> None:
        i = page.iface
        seen.append((i.req_cons, i.rsp_prod, bytes(buffer[1029:1032])))

    server = ServerRing(page, fence=fence)
    guest.write_requests(b"xyz")
    assert server.read_requests() == b"xyz"
    # both fences ran before req_cons moved
    assert [s[0] for s in seen] == [U32 - 2, U32 - 2]
    assert page.iface.req_cons == 1
    seen.clear()
    assert server.write_responses(b"abc") == 3
    # first fence: nothing copied, prod unmoved; second: data copied, prod unmoved
    assert seen[0][1:] == (5, b"\0\0\0")
    assert seen[1][1:] == (5, b"abc")
    assert page.iface.rsp_prod == 8
