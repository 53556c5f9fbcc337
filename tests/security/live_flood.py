"""A client that sends a stream of requests and never reads (XSA-326/416)."""

from __future__ import annotations

import socket
import time

from integration_support import vm_rss_kib


def flood_without_reading(path: str, stream: bytes, settle: float = 3.0) -> socket.socket:
    """Send as much of ``stream`` as the daemon takes, never reading; return
    once nothing more has been accepted for 0.5 s (or after ``settle`` s)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.setblocking(False)
    view = memoryview(stream)
    sent = 0
    last_progress = time.monotonic()
    deadline = last_progress + settle
    while sent < len(stream) and time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent : sent + 65536])
            last_progress = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last_progress > 0.5:
                break
            time.sleep(0.01)
    return sock


def rss_growth_mib(pid: int, before_kib: int) -> float:
    return (vm_rss_kib(pid) - before_kib) / 1024
