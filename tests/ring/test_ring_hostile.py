"""Hostile ring indices: XSA-38 and the ignore-connection rules (spec 7.2, 7.5, 10).

Every table row starts with the spec section it checks.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ring_support import U32, canaries_intact, indices, new_page

from pyxenstored.ring.indices import BadRingError
from pyxenstored.ring.layout import RING_SIZE, Feature, RingError
from pyxenstored.ring.ring import ServerRing

MAX = U32 - 1
u32 = st.integers(min_value=0, max_value=MAX)
FEATURES = [Feature.ERROR | Feature.RECONNECTION, Feature.RECONNECTION, Feature(0)]

HOSTILE = [
    # (spec, cons, prod): both request and response rings get these values
    ("spec 10 XSA-38: prod - cons = 1025", 0, 1025),
    ("spec 10 XSA-38: prod - cons = 1025 across the wrap", MAX - 1, 1023),
    ("spec 10 XSA-38: prod one behind cons", 1, 0),
    ("spec 10 XSA-38: prod far behind cons", 0x1000, 0x10),
    ("spec 10 XSA-38: huge prod", 0, MAX),
    ("spec 10 XSA-38: huge cons", MAX, 0x7FFF_FFFF),
    ("spec 10 XSA-38: half the index space", 0, 0x8000_0000),
]


@pytest.mark.parametrize(("spec", "cons", "prod"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("features", FEATURES, ids=str)
def test_hostile_request_indices_flag_ringidx(
    spec: str, cons: int, prod: int, features: Feature
) -> None:
    # spec 7.2/7.5: bad req indices -> RINGIDX, error field iff ERROR advertised
    buffer, page = new_page()
    page.iface.req_cons, page.iface.req_prod = cons, prod
    page.req[:] = b"\xee" * RING_SIZE
    server = ServerRing(page, features)
    server.connect()
    with pytest.raises(BadRingError) as info:
        server.read_requests()
    assert info.value.error == RingError.RINGIDX
    assert server.ignored == RingError.RINGIDX
    assert page.iface.error == (RingError.RINGIDX if features & Feature.ERROR else 0)
    assert indices(page)[:2] == (cons, prod)  # nothing consumed
    assert canaries_intact(buffer)


@pytest.mark.parametrize(("spec", "cons", "prod"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("features", FEATURES, ids=str)
def test_hostile_response_indices_flag_ringidx(
    spec: str, cons: int, prod: int, features: Feature
) -> None:
    # spec 7.2/7.5: bad rsp indices -> RINGIDX and nothing is written
    buffer, page = new_page()
    page.iface.rsp_cons, page.iface.rsp_prod = cons, prod
    server = ServerRing(page, features)
    server.connect()
    with pytest.raises(BadRingError) as info:
        server.write_responses(b"reply" * 100)
    assert info.value.error == RingError.RINGIDX
    assert page.iface.error == (RingError.RINGIDX if features & Feature.ERROR else 0)
    assert indices(page)[2:] == (cons, prod)
    assert page.rsp[:] == b"\0" * RING_SIZE
    assert canaries_intact(buffer)


def test_ignored_ring_stays_ignored() -> None:
    # spec 7.5: once ignored, no transfer and no reconnect touches the ring
    buffer, page = new_page()
    page.iface.req_prod = 5000
    server = ServerRing(page)
    with pytest.raises(BadRingError):
        server.read_requests()
    page.iface.req_prod = 0  # the guest "repairs" its ring: still ignored
    before = bytes(buffer)
    for call in (server.read_requests, lambda: server.write_responses(b"x")):
        with pytest.raises(BadRingError) as info:
            call()
        assert info.value.error == RingError.RINGIDX
    page.iface.connection = 1
    assert not server.reconnect_requested()
    assert bytes(buffer)[:2068] == before[:2068]


IGNORE = [
    # (spec, reason)
    ("spec 7.5: payload too long", RingError.PROTO),
    ("spec 7.1: mapping not restorable", RingError.COMM),
]


@pytest.mark.parametrize(("spec", "reason"), IGNORE, ids=[r[0] for r in IGNORE])
def test_caller_ignores_with_reason(spec: str, reason: RingError) -> None:
    _, page = new_page()
    server = ServerRing(page, Feature.ERROR)
    server.ignore(reason)
    server.ignore(RingError.RINGIDX)  # the first reason sticks
    assert server.ignored == reason
    assert page.iface.error == reason
    with pytest.raises(BadRingError) as info:
        server.read_requests()
    assert info.value.error == reason


def test_error_field_only_written_when_error_advertised() -> None:
    # spec 7.5: "the error code is written if the ERROR feature is enabled"
    _, page = new_page()
    page.iface.server_features = int(Feature.ERROR)  # the guest's say-so does not count
    server = ServerRing(page, Feature.RECONNECTION)
    assert not server.set_error(RingError.PROTO)
    assert page.iface.error == 0
    server.advertise(Feature.ERROR)
    assert server.set_error(RingError.PROTO)
    assert page.iface.error == RingError.PROTO
    assert page.iface.server_features == Feature.ERROR | Feature.RECONNECTION


@given(
    req_cons=u32,
    req_prod=u32,
    rsp_cons=u32,
    rsp_prod=u32,
    size=st.integers(min_value=0, max_value=2048),
    limit=st.integers(min_value=0, max_value=2048),
)
def test_fuzzed_indices_never_crash_or_overrun(
    req_cons: int, req_prod: int, rsp_cons: int, rsp_prod: int, size: int, limit: int
) -> None:
    # spec 10 XSA-38: any index values -> a bounded transfer or RINGIDX, nothing else
    buffer, page = new_page()
    i = page.iface
    i.req_cons, i.req_prod, i.rsp_cons, i.rsp_prod = req_cons, req_prod, rsp_cons, rsp_prod
    page.req[:] = bytes(range(256)) * 4
    rsp_before = bytes(page.rsp)
    reader = ServerRing(page, Feature.ERROR)
    avail = (req_prod - req_cons) % U32
    try:
        data = reader.read_requests(limit)
    except BadRingError as exc:
        assert avail > RING_SIZE
        assert exc.error == RingError.RINGIDX
        assert (i.req_cons, i.req_prod) == (req_cons, req_prod)
    else:
        assert avail <= RING_SIZE
        assert len(data) == min(avail, limit)
        assert data == bytes((req_cons + k) % RING_SIZE % 256 for k in range(len(data)))
        assert i.req_cons == (req_cons + len(data)) % U32
    assert bytes(page.rsp) == rsp_before  # a read never writes
    writer = ServerRing(page, Feature.ERROR)
    space = RING_SIZE - (rsp_prod - rsp_cons) % U32
    try:
        n = writer.write_responses(b"\x42" * size)
    except BadRingError as exc:
        assert space < 0
        assert exc.error == RingError.RINGIDX
        assert (i.rsp_cons, i.rsp_prod) == (rsp_cons, rsp_prod)
        assert bytes(page.rsp) == rsp_before
    else:
        assert n == min(space, size)
        assert i.rsp_prod == (rsp_prod + n) % U32
        assert bytes(page.rsp).count(b"\x42") >= n
    assert bytes(page.req) == bytes(range(256)) * 4  # the server never writes req
    assert canaries_intact(buffer)


@given(cons=u32, prod=u32)
def test_guest_side_validates_too(cons: int, prod: int) -> None:
    # spec 7.2: the guest applies the mirror-image check to a hostile server
    from pyxenstored.ring.guest import GuestRing

    buffer, page = new_page()
    page.iface.rsp_cons, page.iface.rsp_prod = cons, prod
    page.iface.req_cons, page.iface.req_prod = cons, prod
    guest = GuestRing(page)
    ok = (prod - cons) % U32 <= RING_SIZE
    for call in (guest.read_responses, lambda: guest.write_requests(b"q" * 10)):
        if ok:
            call()
        else:
            with pytest.raises(BadRingError):
                call()
    assert canaries_intact(buffer)
