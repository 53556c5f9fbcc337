"""XSA-72 (CVE-2013-4416): oversized messages.

Attack: a client sends a header whose ``len`` is over the 4096-byte payload
limit (4097 up to 0xFFFFFFFF), hoping the daemon allocates or waits for
that much; or makes the daemon build a reply over 4096 bytes (a DIRECTORY
of a node with many long child names), which no client can receive.

Expected (spec 1.1, section 10): a request header with ``len`` > 4096 is a
protocol error; C (and pyxenstored) closes that one connection, after
answering the good packets before it, and nobody else notices. A reply that
would exceed 4096 bytes is replaced by the error ``E2BIG``; the connection
carries on, and DIRECTORY_PART still lists such a node in chunks.

Layers: the protocol decoder for the framing, the pure engine for the
reply size, and a live daemon for "close only that connection".
"""

from __future__ import annotations

import pytest
from engine_harness import ERROR, Harness
from integration_support import ConnectionClosedError, Daemon, RawConnection

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, PAYLOAD_MAX, Packet

OVERSIZED = [4097, 4098, 8192, 65536, 0x10000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@pytest.mark.parametrize("length", OVERSIZED)
def test_decoder_refuses_oversized_length(length: int) -> None:
    """The header alone is enough to refuse: no payload is waited for."""
    with pytest.raises(ProtocolError):
        Decoder().feed(HEADER.pack(Op.WRITE, 1, 0, length))


@pytest.mark.parametrize("length", OVERSIZED)
def test_decoder_answers_good_packets_before_the_bad_header(length: int) -> None:
    good = Packet(Op.READ, 1, 0, b"/a\0")
    decoder = Decoder()
    packets = decoder.feed(good.encode() + HEADER.pack(Op.WRITE, 2, 0, length) + b"x" * 64)
    assert packets == [good]
    with pytest.raises(ProtocolError):
        decoder.feed(b"")
    with pytest.raises(ProtocolError):  # the error is sticky
        decoder.feed(good.encode())


def test_decoder_accepts_exactly_4096() -> None:
    payload = b"/n\0" + b"v" * (PAYLOAD_MAX - 3)
    packet = Packet(Op.WRITE, 1, 0, payload)
    data = packet.encode()
    decoder = Decoder()
    assert decoder.feed(data[:-1]) == []
    assert decoder.feed(data[-1:]) == [packet]


def test_reply_over_4096_is_e2big(h: Harness) -> None:
    """~1000 children with 20-byte names: a 21 KB child list."""
    names = [f"{i:04d}" + "c" * 16 for i in range(1000)]
    for name in names:
        h.write_ok(h.dom0, f"/wide/{name}")
    assert h.request(h.dom0, Op.DIRECTORY, "/wide") == (ERROR, b"E2BIG\0")
    # The connection is fine, and so is the node.
    h.write_ok(h.dom0, "/wide/0000" + "c" * 16, b"still")
    assert h.read(h.dom0, "/wide/0000" + "c" * 16) == b"still"
    # DIRECTORY_PART is the way to list it: every chunk fits, none is lost.
    listed: list[str] = []
    offset = 0
    while True:
        payload = h.ok(h.dom0, Op.DIRECTORY_PART, "/wide", str(offset))
        assert len(payload) <= PAYLOAD_MAX
        generation, _, chunk = payload.partition(b"\0")
        assert generation.isdigit()
        if chunk == b"\0":
            break
        complete = chunk.endswith(b"\0\0")
        body = chunk[:-1] if complete else chunk
        listed += body.decode().split("\0")[:-1]
        offset += len(body)
        if complete:
            break
    assert sorted(listed) == sorted(names)


def test_guest_reply_over_4096_is_e2big(h: Harness) -> None:
    """The same for an unprivileged reader of a readable wide node."""
    h.write_ok(h.dom0, "/pubwide")
    h.ok(h.dom0, Op.SET_PERMS, "/pubwide", "r0")
    for i in range(300):
        h.write_ok(h.dom0, f"/pubwide/{i:03d}" + "x" * 20)  # inherits r0
    h.write_ok(h.dom0, "/local/domain/5")
    guest = h.introduce(5)
    assert h.err(guest, Op.DIRECTORY, "/pubwide") == "E2BIG"
    assert h.directory(guest, "/pubwide/000" + "x" * 20) == []


# -- a live daemon --------------------------------------------------------------


def test_oversized_length_closes_only_that_connection(daemon: Daemon) -> None:
    path = daemon.socket_path
    with RawConnection(path) as other:
        other.expect_ok(Op.WRITE, b"/xsa72/node\0value")
        for length in (4097, 0x10000, 0x40000000, 0x80000000, 0xFFFFFFFF):
            with RawConnection(path) as bad:
                # A good request pipelined before the bad header is answered.
                bad.send_raw(
                    HEADER.pack(Op.READ, 1, 0, 12)
                    + b"/xsa72/node\0"
                    + HEADER.pack(Op.WRITE, 2, 0, length)
                    + b"/xsa72/evil\0"
                    + b"y" * 200
                )
                assert bad.receive()[:2] == (Op.READ, 1)
                assert bad.is_closed(timeout=5), f"len={length:#x} did not close"
                with pytest.raises((ConnectionClosedError, OSError)):
                    bad.request(Op.READ, b"/xsa72/node\0")
            # The other connection noticed nothing; nothing was written.
            assert other.expect_ok(Op.READ, b"/xsa72/node\0") == b"value"
            assert other.expect_error(Op.READ, b"/xsa72/evil\0") == "ENOENT"
    with RawConnection(path) as fresh:
        assert fresh.expect_ok(Op.READ, b"/xsa72/node\0") == b"value"
    assert daemon.alive()
