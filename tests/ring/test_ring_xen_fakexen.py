"""The real Xen backend on the stand-in hypervisor (DESIGN.md, "The test
boundary for Xen"; spec 7.3, 7.6, 9.3).

pyxenstored/ring/xen.py is unchanged here: the stand-in replaces the Xen
*libraries*. LD_PRELOAD only acts when a process starts, so in the normal
run this module defines a single driver test that re-runs this same file in
a child pytest with ``LD_PRELOAD=libfakexen.so``; in that child (where the
library is mapped) the real tests below are defined instead. To debug, run
the child by hand:

    make -C tests/fakexen
    LD_PRELOAD=$PWD/tests/fakexen/build/libfakexen.so FAKEXEN_DIR=/tmp/fx \\
      .venv/bin/python -m pytest tests/ring/test_ring_xen_fakexen.py

Each test gets its own short ``$FAKEXEN_DIR`` below the one the child was
started with; the library reads the variable on every call.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from xen_support import REPO, FakeXen, Guest, child_env, stand_in_library, stand_in_loaded

if not stand_in_loaded():

    def test_backend_on_stand_in(tmp_path: Path) -> None:
        """Run the tests below in a process that has libfakexen.so preloaded."""
        library = stand_in_library()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider"]
            + [__file__],
            cwd=REPO,
            env=child_env(preload=library, fakexen_dir=tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = proc.stdout + proc.stderr
        assert proc.returncode == 0, report
        passed = re.search(r"(\d+) passed", report)
        assert passed and int(passed.group(1)) >= 11, report
        assert "skipped" not in report, report

else:
    import trio

    from pyxenstored.ring.layout import RingPage
    from pyxenstored.ring.xen import (
        EVTCHN_LIBRARY,
        VIRQ_DOM_EXC,
        DomainState,
        XenDomains,
        XenEventChannels,
        XenGrants,
        ffi,
        open_dom0_ring,
    )

    @pytest.fixture
    def fx(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeXen]:
        # Socket paths must stay under 108 bytes: a short directory below
        # the child's $FAKEXEN_DIR rather than pytest's tmp_path.
        root = Path(tempfile.mkdtemp(prefix="t", dir=os.environ["FAKEXEN_DIR"]))
        monkeypatch.setenv("FAKEXEN_DIR", str(root))
        yield FakeXen(root)

    @pytest.fixture
    def evtchn(fx: FakeXen) -> Iterator[XenEventChannels]:
        with XenEventChannels() as channels:
            yield channels

    @pytest.fixture
    def guest(fx: FakeXen) -> Iterator[Guest]:
        fx.set_domain(5, "running")
        g = Guest(fx.root, 5)  # dom5/ring and an unbound port, as a guest kernel would
        yield g
        g.close()

    def readable(fd: int, timeout: float = 2.0) -> bool:
        return bool(select.select([fd], [], [], timeout)[0])

    def test_notify_reaches_the_guest(fx: FakeXen, evtchn: XenEventChannels, guest: Guest) -> None:
        port = evtchn.bind_interdomain(5, guest.port)
        assert port >= 2  # dom0's port 1 is the reserved xsd_port
        assert os.readlink(fx.evtchn / f"5-{guest.port}.peer") == f"0-{port}.sock"
        evtchn.notify(port)
        assert guest.wait_event(2.0)

    def test_handle_scoped_lookup_would_bypass_the_stand_in(fx: FakeXen) -> None:
        """Why xen.py resolves symbols in the global scope (its loading rule):
        dlsym on the real library's own handle finds the real function, which
        fails here without /dev/xen, while the global scope finds the stand-in."""
        try:
            real = ffi.dlopen(EVTCHN_LIBRARY)
        except OSError:
            return  # Debian's library is not installed: nothing to bypass
        assert real.xenevtchn_open(ffi.NULL, 0) == ffi.NULL
        with XenEventChannels() as channels:
            assert channels.bind_virq() >= 2

    def test_guest_notify_makes_the_port_pending(evtchn: XenEventChannels, guest: Guest) -> None:
        port = evtchn.bind_interdomain(5, guest.port)
        assert evtchn.pending() is None
        assert guest.notify()
        assert guest.notify()  # two kicks, one pending bit
        assert readable(evtchn.fileno())
        assert evtchn.pending() == port
        evtchn.unmask(port)
        assert evtchn.pending() is None
        assert not readable(evtchn.fileno(), 0.0)

    async def test_trio_waits_for_the_fd(evtchn: XenEventChannels, guest: Guest) -> None:
        """How the shell uses it: wait_readable, pending, unmask."""
        port = evtchn.bind_interdomain(5, guest.port)
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, guest.notify)
                await trio.lowlevel.wait_readable(evtchn.fileno())
        assert evtchn.pending() == port
        evtchn.unmask(port)

    def test_virq_dom_exc(fx: FakeXen, evtchn: XenEventChannels) -> None:
        virq_port = evtchn.bind_virq(VIRQ_DOM_EXC)
        assert fx.raise_virq(VIRQ_DOM_EXC) == 1
        assert readable(evtchn.fileno())
        assert evtchn.pending() == virq_port

    def test_unbind_then_notify_is_einval(evtchn: XenEventChannels, guest: Guest) -> None:
        port = evtchn.bind_interdomain(5, guest.port)
        evtchn.unbind(port)
        assert not guest.notify()  # the peer link is gone
        with pytest.raises(OSError) as info:
            evtchn.notify(port)
        assert info.value.errno == 22  # EINVAL, saved by cffi right after the call

    def test_closed_handle_refuses(fx: FakeXen) -> None:
        channels = XenEventChannels()
        channels.close()
        channels.close()  # idempotent
        with pytest.raises(ValueError):
            channels.bind_virq()

    def test_map_ring_sees_the_guest_page(guest: Guest) -> None:
        grants = XenGrants()
        mapping = grants.map_ring(5)
        assert mapping.buffer.nbytes == 4096 and not mapping.buffer.readonly
        guest.page[0:5] = b"hello"
        guest.page[2052:2056] = (5).to_bytes(4, sys.byteorder)  # req_prod
        page = RingPage(mapping.buffer)
        assert bytes(page.req[0:5]) == b"hello"
        assert page.iface.req_prod == 5
        page.iface.rsp_prod = 7  # and writes reach the guest
        assert int.from_bytes(guest.page[2060:2064], sys.byteorder) == 7
        with pytest.raises(BufferError):
            mapping.close()  # RingPage still views it
        assert not mapping.closed
        page.release()
        grants.close()  # unmaps what is left
        assert mapping.closed

    def test_map_ring_of_unknown_domain(fx: FakeXen) -> None:
        grants = XenGrants()
        with pytest.raises(FileNotFoundError):
            grants.map_ring(42)
        grants.close()

    def test_domain_states(fx: FakeXen) -> None:
        for domid, state in [
            (1, "running"),
            (2, "shutdown:2"),
            (3, "crashed"),
            (4, "dying"),
            (6, "paused"),
            (7, "dead"),
        ]:
            fx.set_domain(domid, state)
        domains = XenDomains(batch=2)  # several calls, resuming after the last domid
        assert domains.states() == {
            0: DomainState(),
            1: DomainState(),
            2: DomainState(shutdown=True, shutdown_reason=2),
            3: DomainState(shutdown=True, shutdown_reason=3),
            4: DomainState(dying=True),
            6: DomainState(paused=True),
        }
        fx.set_domain(1, None)  # read afresh on every call
        assert 1 not in domains.states()
        assert domains.state(4) == DomainState(dying=True)
        assert domains.state(5) is None  # between 4 and 6: the next one is not it
        assert domains.state(1) is None
        domains.close()

    def test_dom0_ring(fx: FakeXen) -> None:
        page, port = open_dom0_ring()  # /proc/xen/xsd_* redirected by the stand-in
        assert port == 1
        page.buffer[0:3] = b"abc"
        assert fx.ring_path(0).read_bytes()[0:3] == b"abc"
        ring = RingPage(page.buffer)
        with pytest.raises(BufferError):
            page.close()
        ring.release()
        page.close()
        assert page.closed
