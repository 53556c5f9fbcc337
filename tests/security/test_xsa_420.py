"""XSA-420 (CVE-2022-42324): oxenstored truncated the 32-bit ``len`` to a
31-bit OCaml int, so a length with bit 31 (or 30) set became negative and
the daemon looped forever.

Attack: headers whose ``len`` has bit 31 and/or bit 30 set (0x40000000,
0x7FFFFFFF, 0x80000000, 0x80000010, 0xC0000000, 0xFFFFFFFF ...), alone, with
a payload after them, or fed one byte at a time.

Expected: each is simply an over-long length (> 4096): the decoder refuses
it at once, without waiting for or allocating the payload and without
looping, and the live daemon closes that one connection and keeps serving.

Layers: the protocol decoder; a live daemon for the process.
"""

from __future__ import annotations

import time

import pytest
from integration_support import Daemon, RawConnection

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER, Packet

HIGH_BITS = [
    0x40000000,
    0x40001000,
    0x7FFFFFFF,
    0x80000000,
    0x80000001,
    0x80000010,
    0x80001000,
    0xC0000000,
    0xFFFFF000,
    0xFFFFFFFF,
]


@pytest.mark.parametrize("length", HIGH_BITS, ids=hex)
def test_high_bit_lengths_are_refused_at_once(length: int) -> None:
    header = HEADER.pack(Op.WRITE, 1, 0, length)
    decoder = Decoder()
    started = time.monotonic()
    # Byte by byte: nothing until the header is complete, then the refusal.
    for byte in header[:-1]:
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(ProtocolError):
        decoder.feed(header[-1:] + b"z" * 4096)
    assert time.monotonic() - started < 1.0
    assert len(decoder.pending) <= len(header) + 4096


@pytest.mark.parametrize("length", HIGH_BITS, ids=hex)
def test_high_bit_length_after_good_packets(length: int) -> None:
    good = [Packet(Op.READ, i, 0, b"/x\0") for i in range(3)]
    decoder = Decoder()
    data = b"".join(p.encode() for p in good) + HEADER.pack(Op.READ, 9, 0, length)
    assert decoder.feed(data) == good
    with pytest.raises(ProtocolError):
        decoder.feed(b"")


def test_live_daemon_survives_high_bit_lengths(daemon: Daemon) -> None:
    with RawConnection(daemon.socket_path) as other:
        other.expect_ok(Op.WRITE, b"/xsa420\0ok")
        for length in HIGH_BITS:
            with RawConnection(daemon.socket_path) as bad:
                bad.send_raw(HEADER.pack(Op.WRITE, 1, 0, length) + b"/xsa420/x\0" + b"v" * 50)
                assert bad.is_closed(timeout=5), f"len={length:#x} did not close"
            started = time.monotonic()
            assert other.expect_ok(Op.READ, b"/xsa420\0") == b"ok"
            assert time.monotonic() - started < 1.0, "the daemon is busy (livelock?)"
        assert other.expect_error(Op.READ, b"/xsa420/x\0") == "ENOENT"
    assert daemon.alive()
