"""Ring fuzzing: hostile guests against a daemon that must keep serving the others.

Spec 7.2 (index validation), 7.4 (reconnect), 7.5 (ignored rings), 10
(XSA-38, XSA-325, XSA-326). Each hostile guest runs a seeded random mix of
misbehaviour (bad indices, garbage bytes, over-long headers, resets in the
middle of a packet, requests it never collects replies for); after every
few actions a well-behaved guest and dom0 must still get correct answers.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakexen_support import (
    HEADER,
    XS_READ,
    XS_WRITE,
    Daemon,
    FakeXen,
    introduce,
    running_daemon,
    socket_request,
)
from guest import Guest

HOSTILE = 12
ACTIONS = 40
CONNECTION_OFFSET = 2068
RECONNECT = 1
SEED = 20261125


@pytest.fixture(params=["py", "c"])
def daemon(
    request: pytest.FixtureRequest, fakexen_library: Path, fx: FakeXen, tmp_path: Path
) -> Iterator[Daemon]:
    with running_daemon(request.param, fx, tmp_path / "run") as d:
        yield d


def _introduced(d: Daemon, fx: FakeXen, domid: int) -> Guest:
    fx.set_domain(domid, "running")
    guest = Guest(fx.root, domid)
    socket_request(d.socket_path, XS_WRITE, f"/local/domain/{domid}\0".encode())
    socket_request(d.socket_path, 14, f"/local/domain/{domid}\0n{domid}\0".encode())
    introduce(d.socket_path, domid, guest.port)
    return guest


def _misbehave(guest: Guest, rng: random.Random) -> None:
    """One random hostile action; none of them waits for the daemon."""
    action = rng.randrange(7)
    if action == 0:
        names = ("req_cons", "req_prod", "rsp_cons", "rsp_prod")
        guest.set_indices(**{rng.choice(names): rng.getrandbits(32)})
    elif action == 1:
        garbage = rng.randbytes(rng.randrange(1, 600))
        _write_nowait(guest, garbage)
    elif action == 2:
        _write_nowait(guest, HEADER.pack(XS_WRITE, 1, 0, rng.randrange(4097, 2**32)))
    elif action == 3:
        # Half a request, then a reset (spec 7.4) if the daemon offers one.
        _write_nowait(guest, HEADER.pack(XS_READ, 2, 0, 10)[: rng.randrange(1, 16)])
        if struct.unpack_from("=I", guest.page, 2064)[0] & RECONNECT:
            struct.pack_into("=I", guest.page, CONNECTION_OFFSET, 1)
    elif action == 4:
        # Requests whose replies are never read (XSA-326).
        for i in range(rng.randrange(1, 40)):
            _write_nowait(guest, HEADER.pack(XS_READ, i, 0, 2) + b"/\0")
    elif action == 5:
        _write_nowait(guest, HEADER.pack(rng.getrandbits(32), 3, rng.getrandbits(32), 0))
    # action 6: nothing but the kick below, which is then spurious.
    guest.notify()


def _write_nowait(guest: Guest, data: bytes) -> None:
    try:
        guest.write_req(data, timeout=0.0)
    except (TimeoutError, RuntimeError):
        pass  # the ring is full or broken: that is the point


def test_hostile_guests_do_not_disturb_others(daemon: Daemon, fx: FakeXen) -> None:
    rng = random.Random(SEED)
    good = _introduced(daemon, fx, 1)
    hostile = [_introduced(daemon, fx, 10 + n) for n in range(HOSTILE)]
    try:
        for step in range(ACTIONS):
            for guest in hostile:
                _misbehave(guest, rng)
            if step % 5 == 0:
                value = f"v{step}".encode()
                assert good.request(XS_WRITE, b"data\0" + value) == (XS_WRITE, b"OK\0")
                assert good.request(XS_READ, b"data\0") == (XS_READ, value)
                dom0_view = socket_request(daemon.socket_path, XS_READ, b"/local/domain/1/data\0")
                assert dom0_view == value
        assert daemon.proc.poll() is None, "the daemon died"
    finally:
        good.close()
        for guest in hostile:
            guest.close()
