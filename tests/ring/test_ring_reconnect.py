"""The reconnect handshake and (re)introduction (spec 7.4, 7.6).

Every table row starts with the spec section it checks.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ring_support import U32, canaries_intact, indices, new_page, pair

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER_SIZE, Packet
from pyxenstored.ring.guest import GuestRing
from pyxenstored.ring.layout import RING_SIZE, Connection, Feature, RingError
from pyxenstored.ring.ring import ServerRing

REQUEST = Packet(Op.WRITE, 7, 0, b"/local/domain/1/data\0" + b"v" * 300)
REPLY = Packet(Op.DIRECTORY, 7, 0, b"child\0" * 400)  # > one ring


class Shell:
    """What the trio shell does with a ring, minus the trio (ring.py docstring)."""

    def __init__(self, server: ServerRing) -> None:
        self.server = server
        self.decoder = Decoder()
        self.outgoing = bytearray()
        self.packets: list[Packet] = []
        self.resets = 0

    def kick(self) -> bool:
        if self.server.reconnect_requested():
            self.decoder = Decoder()
            self.outgoing.clear()
            self.packets.clear()
            self.resets += 1
            self.server.complete_reconnect()
        while data := self.server.read_requests():
            self.packets += self.decoder.feed(data)
        sent = self.server.write_responses(self.outgoing)
        del self.outgoing[:sent]
        return self.server.take_notify()


def test_reconnect_mid_packet_resets_on_a_packet_boundary() -> None:
    # spec 7.4: partial packets in both directions are dropped; a fresh packet decodes alone
    buffer, page, server, guest = pair(req_start=U32 - 5, rsp_start=U32 - 700)
    shell = Shell(server)
    wire = REQUEST.encode()
    guest.write_requests(wire[: HEADER_SIZE + 10])  # header and part of the payload
    shell.outgoing += REPLY.encode()  # the reply only partly fits
    assert shell.kick()
    assert shell.decoder.pending and shell.outgoing
    assert guest.read_responses(100)  # the guest has read part of the reply

    guest.start_reconnect()
    assert server.reconnect_requested()
    assert shell.kick()  # spec 7.4: notify after setting CONNECTED
    assert shell.resets == 1
    assert guest.connected
    assert indices(page) == (0, 0, 0, 0)
    assert page.req[:] == page.rsp[:] == b"\xff" * RING_SIZE  # XS_INVALID filler
    assert guest.read_responses() == b""  # nothing stale from the old reply
    assert not shell.decoder.pending and not shell.outgoing

    guest.write_requests(wire)
    shell.kick()
    assert shell.packets == [REQUEST]
    shell.outgoing += REPLY.encode()[:50]
    shell.kick()
    assert guest.read_responses() == REPLY.encode()[:50]
    assert canaries_intact(buffer)


def test_reconnect_publishes_features_before_connected() -> None:
    # spec 7.4: a server advertising bit 1 advertises it before touching the queues
    _, page, server, guest = pair()
    order: list[tuple[int, int]] = []

    def fence() -> None:
        order.append((page.iface.server_features, page.iface.connection))

    server = ServerRing(page, server.features, fence=fence)
    guest.start_reconnect()
    assert server.reconnect_requested()
    server.complete_reconnect()
    assert order == [(int(server.features), Connection.RECONNECT)]
    assert page.iface.connection == Connection.CONNECTED


NOT_HONOURED = [
    # (spec, features, ignored)
    ("spec 7.4: RECONNECTION not advertised (C behaviour)", Feature.ERROR, False),
    ("spec 7.5: an ignored connection stays ignored", Feature.RECONNECTION, True),
]


@pytest.mark.parametrize(
    ("spec", "features", "ignored"), NOT_HONOURED, ids=[r[0] for r in NOT_HONOURED]
)
def test_reconnect_not_honoured(spec: str, features: Feature, ignored: bool) -> None:
    _, page, server, _ = pair(req_start=10, features=features)
    if ignored:
        server.ignore(RingError.RINGIDX)
    page.iface.connection = Connection.RECONNECT
    assert not server.reconnect_requested()
    assert page.iface.req_cons == 10


def test_guest_refuses_reconnect_without_the_feature() -> None:
    # spec 7.4: a guest only uses the handshake if the server advertises it
    _, page, _, guest = pair(features=Feature.ERROR)
    with pytest.raises(RuntimeError):
        guest.start_reconnect()
    assert page.iface.connection == Connection.CONNECTED


def test_connect_completes_a_preset_reconnect_without_resetting_data() -> None:
    # spec 7.4/7.6: dom0less pre-sets connection=1; INTRODUCE sets 0 and notifies;
    # re-attaching after a restart must keep bytes in flight
    buffer, page = new_page()
    i = page.iface
    i.connection = Connection.RECONNECT
    i.req_cons, i.req_prod = U32 - 2, 3
    page.req[1022:1024] = b"ab"
    page.req[0:3] = b"cde"
    server = ServerRing(page)
    assert not server.notify_pending
    assert bytes(buffer)[2048:2060] != b"\0" * 12
    server.connect()
    assert i.connection == Connection.CONNECTED
    assert i.server_features == server.features
    assert server.take_notify()
    assert server.read_requests() == b"abcde"
    assert canaries_intact(buffer)


def test_evtchn_port_is_read_from_the_page() -> None:
    # spec 7.1: evtchn_port pre-filled by the builder (dom0less/Hyperlaunch)
    _, page = new_page()
    server = ServerRing(page)
    assert server.evtchn_port == 0
    page.iface.evtchn_port = 17
    assert server.evtchn_port == 17


@settings(max_examples=100)
@given(
    req_start=st.integers(min_value=0, max_value=U32 - 1),
    rsp_start=st.integers(min_value=0, max_value=U32 - 1),
    cut=st.integers(min_value=0, max_value=len(REQUEST.encode()) - 1),
    backlog=st.integers(min_value=0, max_value=3000),
    guest_reads=st.integers(min_value=0, max_value=RING_SIZE),
)
def test_reconnect_at_any_point_then_clean_round_trip(
    req_start: int, rsp_start: int, cut: int, backlog: int, guest_reads: int
) -> None:
    # spec 7.4: wherever the reconnect lands, the next packet is decoded exactly once
    buffer, page, server, guest = pair(req_start=req_start, rsp_start=rsp_start)
    shell = Shell(server)
    guest.write_requests(REQUEST.encode()[:cut])
    shell.outgoing += b"\x01" * backlog
    shell.kick()
    guest.read_responses(guest_reads)
    guest.start_reconnect()
    shell.kick()
    assert guest.connected and shell.resets == 1
    assert guest.read_responses() == b""
    guest.write_requests(REQUEST.encode())
    shell.kick()
    assert shell.packets == [REQUEST]
    assert canaries_intact(buffer)


def test_guest_attaches_at_nonzero_indices() -> None:
    # spec 7.2: initial index values are arbitrary; guests must not assume 0
    _, page, server, _ = pair(req_start=0xDEAD_BEEF, rsp_start=0xFFFF_FF00)
    guest = GuestRing(page)
    assert guest.write_requests(b"hello") == 5
    assert server.read_requests() == b"hello"
    assert server.write_responses(b"world" * 100) == 500
    assert guest.read_responses() == b"world" * 100
