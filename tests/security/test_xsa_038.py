"""XSA-38 (CVE-2013-0215): oxenstored trusted the guest-written ring indices.

Attack: a guest writes arbitrary values into ``req_prod`` (its request
producer) or ``rsp_cons`` (its response consumer), so that ``prod - cons``
is negative, more than a ring's worth (1024 bytes), or wraps at 2**32, to
make the daemon read or write outside the 1 KiB ring buffers or spin.

Expected (spec 7.2, 7.5): a pair with ``(prod - cons) mod 2**32 > 1024`` is
never trusted: nothing is copied, the ring is flagged ``RINGIDX`` in the
page's error field and ignored from then on; a sane pair, including one
that wraps past 2**32, is served normally; the daemon does not hang and
every other connection keeps its service.

Layers: the pure ring object (``ServerRing`` over a 4 KiB page, fuzzed with
hypothesis) and a live pyxenstored over the stand-in hypervisor's rings.
The same hostile-index scenarios against the C and OCaml daemons live in
tests/fakexen/test_fakexen_advisories.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ring_support import U32, canaries_intact, new_page, pair

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER
from pyxenstored.ring.indices import BadRingError
from pyxenstored.ring.layout import RING_SIZE, Feature, RingError
from pyxenstored.ring.ring import ServerRing

u32 = st.integers(min_value=0, max_value=U32 - 1)
#: Offsets that straddle the sane/insane boundary, the wrap and the sign bit.
delta = st.one_of(
    st.integers(min_value=0, max_value=1100),
    st.integers(min_value=U32 - 100, max_value=U32 - 1),
    st.sampled_from([1024, 1025, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FC00]),
)
FEATURES = Feature.ERROR | Feature.RECONNECTION


@settings(max_examples=300, deadline=None)
@given(cons=u32, gap=delta)
def test_request_indices_are_bounds_checked(cons: int, gap: int) -> None:
    """req_prod = req_cons + gap: more than 1024 ahead (or behind) is RINGIDX
    with nothing consumed; otherwise exactly ``gap`` bytes, taken modulo the
    buffer, and never a byte outside the page's rings."""
    buffer, page = new_page()
    prod = (cons + gap) % U32
    page.iface.req_cons, page.iface.req_prod = cons, prod
    page.req[:] = bytes(range(256)) * 4
    server = ServerRing(page, FEATURES)
    server.connect()
    if gap > RING_SIZE:
        with pytest.raises(BadRingError) as info:
            server.read_requests()
        assert info.value.error == RingError.RINGIDX
        assert server.ignored == RingError.RINGIDX
        assert page.iface.error == RingError.RINGIDX
        assert (page.iface.req_cons, page.iface.req_prod) == (cons, prod)
        # Once ignored, even repaired indices get no more service.
        page.iface.req_prod = cons
        with pytest.raises(BadRingError):
            server.read_requests()
    else:
        data = server.read_requests()
        assert len(data) == gap
        assert data == bytes((cons + i) % 256 for i in range(gap))
        assert page.iface.req_cons == prod
        assert page.iface.error == 0
    assert canaries_intact(buffer)


@settings(max_examples=300, deadline=None)
@given(prod=u32, gap=delta)
def test_response_indices_are_bounds_checked(prod: int, gap: int) -> None:
    """rsp_prod - rsp_cons = gap as the guest left it: beyond 1024 the daemon
    writes nothing and flags RINGIDX; otherwise it writes at most the free
    space (1024 - gap) and no byte outside the response buffer."""
    buffer, page = new_page()
    cons = (prod - gap) % U32
    page.iface.rsp_cons, page.iface.rsp_prod = cons, prod
    server = ServerRing(page, FEATURES)
    server.connect()
    reply = b"\x5a" * 2000
    if gap > RING_SIZE:
        with pytest.raises(BadRingError) as info:
            server.write_responses(reply)
        assert info.value.error == RingError.RINGIDX
        assert page.iface.error == RingError.RINGIDX
        assert page.iface.rsp_prod == prod
    else:
        written = server.write_responses(reply)
        assert written == RING_SIZE - gap
        assert page.iface.rsp_prod == (prod + written) % U32
    assert canaries_intact(buffer)


def test_wrapping_indices_carry_whole_packets() -> None:
    """Free-running indices that wrap past 2**32 are legitimate: a request
    split across the wrap of both the index and the buffer decodes whole."""
    _, page, server, guest = pair(req_start=U32 - 7, rsp_start=U32 - 3)
    packet = HEADER.pack(Op.READ, 1, 0, 6) + b"/a/bc\0"
    assert guest.write_requests(packet) == len(packet)
    data = server.read_requests()
    assert Decoder().feed(data)[0].payload == b"/a/bc\0"
    assert page.iface.req_cons == (U32 - 7 + len(packet)) % U32
    assert server.write_responses(b"r" * 20) == 20
    assert page.iface.rsp_prod == 17
    assert server.ignored is None


# -- the whole daemon, over a ring ----------------------------------------------


@pytest.mark.parametrize(
    "indices",
    [
        {"req_cons": 0, "req_prod": 1025},
        {"req_cons": 100, "req_prod": 99},
        {"req_cons": 0x8000_0000, "req_prod": 0x7FFF_FFFF},
    ],
    ids=["too-far-ahead", "behind", "huge"],
)
def test_live_daemon_drops_only_the_bad_ring(
    fakexen_library: Path, tmp_path: Path, indices: dict[str, int]
) -> None:
    """pyxenstored on the stand-in hypervisor: guest 5 corrupts its request
    indices; its ring is flagged RINGIDX and served no more, while guest 6
    and dom0 are served and the daemon stays up."""
    from advisory_support import XENSTORE_ERROR_RINGIDX, XS_READ, Harness, strings, wait_until

    h = Harness("py", tmp_path)
    try:
        bad = h.guest(5)
        good = h.guest(6)
        bad.write("before", "1")
        bad.set_indices(**indices)
        bad.notify()
        wait_until(lambda: bad.ring_error == XENSTORE_ERROR_RINGIDX, "the ring is flagged")
        good.write("data", "fine")
        assert good.read("data") == b"fine"
        assert h.dom0.read("/local/domain/5/before") == b"1"
        # Repaired indices and a fresh request: still no service for 5.
        cons = struct.unpack_from("=I", bad.page, 2048)[0]
        _, _, _, rsp_prod = struct.unpack_from("=IIII", bad.page, 2048)
        msg = HEADER.pack(Op.WRITE, 77, 0, 9) + b"after\0 no"
        bad.set_indices(req_cons=cons, req_prod=cons, rsp_cons=rsp_prod)
        for i, byte in enumerate(msg):
            bad.page[(cons + i) % 1024] = byte
        bad.set_indices(req_prod=(cons + len(msg)) % U32)
        bad.notify()
        good.write("sync", "x")  # one round trip through the daemon
        assert h.dom0.error(XS_READ, strings("/local/domain/5/after")) == "ENOENT"
        assert h.dom0.is_introduced(5)  # ignored, not released (XSA-325)
        h.assert_alive()
    finally:
        status = h.close()
    assert status is not None, "pyxenstored crashed"
