"""XSA-416 (CVE-2022-42319): C held temporary memory for a request until the
guest read the reply, so large requests never read ran the daemon out of
memory.

Attack: a client pipelines thousands of DIRECTORY requests whose replies are
close to 4096 bytes each (about 40 MB of replies in all) and never reads
any of them.

Expected: the daemon stops reading that client once its bound of queued
replies is reached, so its memory (RSS, from /proc/<pid>/status) grows by a
few MiB at most, not by the 40 MB asked for; another client is served
promptly meanwhile; the flooder's replies, once it does read, are complete
and in order.

Layer: a live daemon over its Unix socket.
"""

from __future__ import annotations

import time

from integration_support import HEADER, Daemon, RawConnection, vm_rss_kib
from live_flood import flood_without_reading, rss_growth_mib

from pyxenstored.protocol.ops import Op

REQUESTS = 10_000


def test_unread_large_directory_replies_stay_bounded(daemon: Daemon) -> None:
    with RawConnection(daemon.socket_path) as setup:
        for i in range(150):  # 150 * 26 bytes: a ~3.9 KB child list
            setup.expect_ok(Op.MKDIR, b"/xsa416/%03d" % i + b"n" * 22 + b"\0")
        listing = setup.expect_ok(Op.DIRECTORY, b"/xsa416\0")
        assert 3800 < len(listing) <= 4096
    time.sleep(0.2)
    before = vm_rss_kib(daemon.pid)
    request = b"/xsa416\0"
    stream = b"".join(
        HEADER.pack(Op.DIRECTORY, i, 0, len(request)) + request for i in range(REQUESTS)
    )
    flooder = flood_without_reading(daemon.socket_path, stream)
    try:
        with RawConnection(daemon.socket_path, timeout=5) as other:
            start = time.monotonic()
            for i in range(20):
                other.expect_ok(Op.WRITE, b"/xsa416-other/%d\0x" % i)
            assert time.monotonic() - start < 2.0
        growth = rss_growth_mib(daemon.pid, before)
        assert growth < 16, f"RSS grew by {growth:.1f} MiB for unread replies"
        assert daemon.alive()
        # Reading now: the first replies are whole DIRECTORY replies, in order.
        flooder.setblocking(True)
        flooder.settimeout(10)
        buffer = b""
        for expected in range(50):
            while len(buffer) < HEADER.size or len(buffer) < HEADER.size + HEADER.unpack_from(
                buffer
            )[3]:
                chunk = flooder.recv(65536)
                assert chunk, "the daemon closed the flooder"
                buffer += chunk
            type_, req_id, _tx, length = HEADER.unpack_from(buffer)
            assert (type_, req_id) == (Op.DIRECTORY, expected)
            assert buffer[HEADER.size : HEADER.size + length] == listing
            buffer = buffer[HEADER.size + length :]
    finally:
        flooder.close()
