"""The real Xen backend: event channels, grant mapping, domain states (spec 7.3, 7.6, 9.3).

cffi bindings in ABI mode (``ffi.dlopen``, no compiler at import) to the Xen
libraries a xenstore daemon needs: ``libxenevtchn``, ``libxengnttab`` and
``libxenctrl`` (Xen 4.17 sonames), plus dom0's ``/proc/xen/xsd_kva`` and
``/proc/xen/xsd_port``. Everything here is a thin, synchronous wrapper; the
trio shell awaits ``XenEventChannels.fileno()`` and does the rest.

Loading rule (DESIGN.md, "The test boundary for Xen")
------------------------------------------------------
Each library is ``dlopen``-ed by soname with ``RTLD_GLOBAL``, but every
symbol is looked up in the process's *global scope* (``dlopen(NULL)``), never
through the library's own handle. The global scope is searched in the order
the dynamic linker uses for a C daemon linked against the libraries: the
executable, then ``LD_PRELOAD`` objects, then everything loaded at start-up,
then ``RTLD_GLOBAL`` libraries. So:

* on a Xen host, the symbols come from Debian's ``libxen*.so`` (loaded
  ``RTLD_GLOBAL`` just for that);
* under ``LD_PRELOAD=libfakexen.so`` (tests, drills), the stand-in wins, just
  as it does for the C and OCaml daemons. A ``dlsym`` on the library handle
  would search only that library and its dependencies and silently bypass
  the preload (a test checks that this would call the real, failing
  ``xenevtchn_open``);
* a library found first on ``LD_LIBRARY_PATH`` under the same soname also
  replaces the real one;
* if a library cannot be loaded and nothing else defines its symbols,
  constructing the class raises ``OSError(ELIBACC)``.

Errors: a C call that returns -1 or NULL raises ``OSError(errno, ...)`` with
the errno that cffi saved right after the call. On a machine without Xen the
``*_open`` calls fail (ENOENT for the missing ``/dev/xen`` nodes), which is
what the daemon sees when it is started without a hypervisor.

Architecture: ``xc_domaininfo_t`` is declared with the x86 layout of Xen
4.17 (``XEN_DOMCTL_INTERFACE_VERSION`` 0x15), the layout the
``libxenctrl.so.4.17`` soname implies; a test checks it against
``<xenctrl.h>`` with gcc.
"""

from __future__ import annotations

import errno
import mmap
import os
import platform
from typing import Any, Final

import attrs
import cffi

from pyxenstored.ring.layout import PAGE_SIZE

EVTCHN_LIBRARY: Final = "libxenevtchn.so.1"
GNTTAB_LIBRARY: Final = "libxengnttab.so.1"
CTRL_LIBRARY: Final = "libxenctrl.so.4.17"

VIRQ_DOM_EXC: Final = 3
"""A domain shut down or died: look at every domain again (spec 9.3 point 5)."""
GNTTAB_RESERVED_XENSTORE: Final = 1
"""The grant reference a domain builder points at the xenstore page (spec 7.6)."""

XSD_KVA: Final = "/proc/xen/xsd_kva"
XSD_PORT: Final = "/proc/xen/xsd_port"

# XEN_DOMINF_* (xen/domctl.h).
DOMINF_DYING: Final = 1 << 0
DOMINF_HVM_GUEST: Final = 1 << 1
DOMINF_SHUTDOWN: Final = 1 << 2
DOMINF_PAUSED: Final = 1 << 3
DOMINF_XS_DOMAIN: Final = 1 << 7
DOMINF_SHUTDOWNSHIFT: Final = 16
DOMINF_SHUTDOWNMASK: Final = 0xFF
SHUTDOWN_CRASH: Final = 3

CDEF = """
typedef uint32_t evtchn_port_t;
typedef struct xenevtchn_handle xenevtchn_handle;
typedef struct xengntdev_handle xengnttab_handle;
typedef struct xc_interface_core xc_interface;

xenevtchn_handle *xenevtchn_open(void *logger, unsigned int flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
int xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                               evtchn_port_t remote_port);
int xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
int xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);

xengnttab_handle *xengnttab_open(void *logger, unsigned int open_flags);
int xengnttab_close(xengnttab_handle *xgt);
void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid,
                              uint32_t ref, int prot);
int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count);

/* struct xen_domctl_getdomaininfo, Xen 4.17, x86 arch_config. */
typedef struct {
    uint16_t domain;
    uint16_t pad1;
    uint32_t flags;
    uint64_t tot_pages;
    uint64_t max_pages;
    uint64_t outstanding_pages;
    uint64_t shr_pages;
    uint64_t paged_pages;
    uint64_t shared_info_frame;
    uint64_t cpu_time;
    uint32_t nr_online_vcpus;
    uint32_t max_vcpu_id;
    uint32_t ssidref;
    uint8_t handle[16];
    uint32_t cpupool;
    uint8_t gpaddr_bits;
    uint8_t pad2[7];
    uint32_t arch_emulation_flags;
    uint32_t arch_misc_flags;
} xc_domaininfo_t;

xc_interface *xc_interface_open(void *logger, void *dombuild_logger,
                                unsigned int open_flags);
int xc_interface_close(xc_interface *xch);
int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain,
                          unsigned int max_domains, xc_domaininfo_t *info);
"""

ffi: Any = cffi.FFI()
ffi.cdef(CDEF)

_handles: dict[str, Any] = {}
"""Loaded libraries by soname, kept referenced so that they are never dlclosed."""
_load_errors: dict[str, str] = {}
_global: list[Any] = []


def _library(soname: str, *symbols: str) -> Any:
    """The global-scope lib, after loading ``soname`` RTLD_GLOBAL (module doc).

    Raises OSError(ELIBACC) if one of ``symbols`` is defined nowhere.
    """
    if soname not in _handles and soname not in _load_errors:
        try:
            _handles[soname] = ffi.dlopen(soname, ffi.RTLD_NOW | ffi.RTLD_GLOBAL)
        except OSError as exc:
            # Not fatal: an LD_PRELOADed stand-in may define the symbols.
            _load_errors[soname] = str(exc)
    if not _global:
        _global.append(ffi.dlopen(None))
    lib = _global[0]
    for name in symbols:
        try:
            getattr(lib, name)
        except AttributeError:
            why = _load_errors.get(soname, "loaded, but the symbol is missing")
            raise OSError(
                errno.ELIBACC, f"Xen library call {name} unavailable ({soname}: {why})"
            ) from None
    return lib


def _error(call: str) -> OSError:
    """OSError for a failed C call, from the errno cffi saved right after it."""
    err = ffi.errno or errno.EIO
    return OSError(err, f"{call}: {os.strerror(err)}")


def _check(result: int, call: str) -> int:
    if result < 0:
        raise _error(call)
    return result


class XenEventChannels:
    """One ``xenevtchn`` handle: all of the daemon's event channel ports.

    The shell awaits ``fileno()`` readable, then calls ``pending()`` and
    ``unmask()`` for the port it returns, as C xenstored does after poll.
    Every port is bound on this one handle, so one fd serves them all.
    """

    def __init__(self) -> None:
        self._lib = _library(
            EVTCHN_LIBRARY,
            "xenevtchn_open",
            "xenevtchn_close",
            "xenevtchn_fd",
            "xenevtchn_notify",
            "xenevtchn_bind_interdomain",
            "xenevtchn_bind_virq",
            "xenevtchn_unbind",
            "xenevtchn_pending",
            "xenevtchn_unmask",
        )
        # flags 0: the fd is close-on-exec (live update will need
        # XENEVTCHN_NO_CLOEXEC and xenevtchn_fdopen).
        handle = self._lib.xenevtchn_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            raise _error("xenevtchn_open")
        self._handle: Any = handle
        self._fd: int = self._lib.xenevtchn_fd(handle)
        # xenevtchn.h warns that O_NONBLOCK may not make xenevtchn_pending
        # fail with EAGAIN on old kernels, so the shell must still wait for
        # readability first; where it does work, a spurious wake-up returns
        # None instead of blocking the whole trio loop.
        try:
            os.set_blocking(self._fd, False)
        except OSError:
            self.close()
            raise

    def fileno(self) -> int:
        """The fd that is readable when some port has an event pending."""
        return self._fd

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        """Connect a new local port to ``remote_port`` of ``domid``; returns it."""
        return _check(
            self._lib.xenevtchn_bind_interdomain(self._h(), domid, remote_port),
            f"xenevtchn_bind_interdomain({domid}, {remote_port})",
        )

    def bind_virq(self, virq: int = VIRQ_DOM_EXC) -> int:
        """Bind a new local port to a virtual IRQ; returns the port."""
        return _check(
            self._lib.xenevtchn_bind_virq(self._h(), virq), f"xenevtchn_bind_virq({virq})"
        )

    def notify(self, port: int) -> None:
        _check(self._lib.xenevtchn_notify(self._h(), port), f"xenevtchn_notify({port})")

    def pending(self) -> int | None:
        """The next port with an event, or None if there is none (EAGAIN).

        Call it only after ``fileno()`` was readable (see ``__init__``). The
        port stays masked until ``unmask(port)``.
        """
        port = self._lib.xenevtchn_pending(self._h())
        if port < 0:
            if ffi.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return None
            raise _error("xenevtchn_pending")
        return int(port)

    def unmask(self, port: int) -> None:
        _check(self._lib.xenevtchn_unmask(self._h(), port), f"xenevtchn_unmask({port})")

    def unbind(self, port: int) -> None:
        _check(self._lib.xenevtchn_unbind(self._h(), port), f"xenevtchn_unbind({port})")

    def close(self) -> None:
        """Close the handle (and with it every port bound on it); idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            _check(self._lib.xenevtchn_close(handle), "xenevtchn_close")

    def __enter__(self) -> XenEventChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _h(self) -> Any:
        if self._handle is None:
            raise ValueError("event channel handle is closed")
        return self._handle


class GrantMapping:
    """A domain's xenstore page, mapped through its grant reference.

    ``buffer`` is a writable 4096-byte memoryview of the mapped page; pass it
    to ``RingPage``. ``close()`` releases the view before unmapping, so it
    raises BufferError while a ``RingPage`` (or any other export) still
    uses the page: a stale view can never touch unmapped memory.
    """

    def __init__(self, grants: XenGrants, address: Any) -> None:
        self._grants = grants
        self._address: Any = address
        self.buffer: memoryview = memoryview(ffi.buffer(ffi.cast("char *", address), PAGE_SIZE))

    @property
    def closed(self) -> bool:
        return self._address is None

    def close(self) -> None:
        """Unmap the page (idempotent); BufferError while the page is in use."""
        if self._address is None:
            return
        self.buffer.release()
        address, self._address = self._address, None
        self._grants._unmapped(self, address)

    unmap = close


class XenGrants:
    """One ``xengnttab`` handle: maps other domains' granted xenstore pages."""

    def __init__(self) -> None:
        self._lib = _library(
            GNTTAB_LIBRARY,
            "xengnttab_open",
            "xengnttab_close",
            "xengnttab_map_grant_ref",
            "xengnttab_unmap",
        )
        handle = self._lib.xengnttab_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            raise _error("xengnttab_open")
        self._handle: Any = handle
        self._mappings: set[GrantMapping] = set()

    def map_ring(self, domid: int, ref: int = GNTTAB_RESERVED_XENSTORE) -> GrantMapping:
        """Map grant ``ref`` (default 1, the xenstore page) of ``domid`` read-write."""
        if self._handle is None:
            raise ValueError("grant table handle is closed")
        address = self._lib.xengnttab_map_grant_ref(
            self._handle, domid, ref, mmap.PROT_READ | mmap.PROT_WRITE
        )
        if address == ffi.NULL:
            raise _error(f"xengnttab_map_grant_ref({domid}, {ref})")
        mapping = GrantMapping(self, address)
        self._mappings.add(mapping)
        return mapping

    def _unmapped(self, mapping: GrantMapping, address: Any) -> None:
        self._mappings.discard(mapping)
        _check(self._lib.xengnttab_unmap(self._handle, address, 1), "xengnttab_unmap")

    def close(self) -> None:
        """Unmap every page still mapped, then close the handle; idempotent.

        Raises BufferError (and stays open) if a mapping is still in use.
        """
        for mapping in list(self._mappings):
            mapping.close()
        handle, self._handle = self._handle, None
        if handle is not None:
            _check(self._lib.xengnttab_close(handle), "xengnttab_close")


@attrs.frozen
class DomainState:
    """One existing domain as the hypervisor reports it (XEN_DOMINF_* flags)."""

    dying: bool = False
    shutdown: bool = False
    #: SHUTDOWN_* code the guest gave (poweroff 0, reboot 1, suspend 2,
    #: crash 3, ...); meaningful only when ``shutdown``.
    shutdown_reason: int = 0
    paused: bool = False
    hvm: bool = False
    #: The domain was built as a xenstore domain (XEN_DOMINF_xs_domain).
    xenstore: bool = False

    @property
    def crashed(self) -> bool:
        return self.shutdown and self.shutdown_reason == SHUTDOWN_CRASH

    @classmethod
    def from_flags(cls, flags: int) -> DomainState:
        return cls(
            dying=bool(flags & DOMINF_DYING),
            shutdown=bool(flags & DOMINF_SHUTDOWN),
            shutdown_reason=(flags >> DOMINF_SHUTDOWNSHIFT) & DOMINF_SHUTDOWNMASK,
            paused=bool(flags & DOMINF_PAUSED),
            hvm=bool(flags & DOMINF_HVM_GUEST),
            xenstore=bool(flags & DOMINF_XS_DOMAIN),
        )


class XenDomains:
    """One ``xc_interface``: which domains exist, and whether they are going away."""

    def __init__(self, batch: int = 256) -> None:
        """``batch``: domains fetched per ``xc_domain_getinfolist`` call."""
        if platform.machine() not in ("x86_64", "AMD64"):
            # The cdef carries the x86 arch_config; elsewhere the array
            # stride would be wrong and the hypervisor would write past it.
            raise OSError(errno.ENOSYS, f"xc_domaininfo_t layout unknown on {platform.machine()}")
        self._lib = _library(
            CTRL_LIBRARY, "xc_interface_open", "xc_interface_close", "xc_domain_getinfolist"
        )
        handle = self._lib.xc_interface_open(ffi.NULL, ffi.NULL, 0)
        if handle == ffi.NULL:
            raise _error("xc_interface_open")
        self._handle: Any = handle
        self._batch = batch
        self._info: Any = ffi.new("xc_domaininfo_t[]", batch)

    def states(self) -> dict[int, DomainState]:
        """Every existing domain, by domid (what C ``check_domains`` reads)."""
        if self._handle is None:
            raise ValueError("xc interface is closed")
        states: dict[int, DomainState] = {}
        first = 0
        while True:
            count = _check(
                self._lib.xc_domain_getinfolist(self._handle, first, self._batch, self._info),
                "xc_domain_getinfolist",
            )
            for i in range(count):
                info = self._info[i]
                states[info.domain] = DomainState.from_flags(info.flags)
            if count < self._batch:
                return states
            first = self._info[count - 1].domain + 1

    def state(self, domid: int) -> DomainState | None:
        """One domain, or None if it does not exist (one ``xc_domain_getinfolist``)."""
        if self._handle is None:
            raise ValueError("xc interface is closed")
        count = _check(
            self._lib.xc_domain_getinfolist(self._handle, domid, 1, self._info),
            "xc_domain_getinfolist",
        )
        if count and self._info[0].domain == domid:
            return DomainState.from_flags(self._info[0].flags)
        return None

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            _check(self._lib.xc_interface_close(handle), "xc_interface_close")


class Dom0Page:
    """dom0's own xenstore page: ``/proc/xen/xsd_kva`` mapped shared (spec 7.6).

    Same shape as ``GrantMapping``: ``buffer`` for ``RingPage``, ``close()``.
    """

    def __init__(self, path: str = XSD_KVA) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.buffer: memoryview = memoryview(self._map)

    @property
    def closed(self) -> bool:
        return self._map.closed

    def close(self) -> None:
        """Unmap (idempotent); BufferError while the page is in use."""
        if not self._map.closed:
            self.buffer.release()
            self._map.close()


def open_dom0_ring(kva: str = XSD_KVA, port: str = XSD_PORT) -> tuple[Dom0Page, int]:
    """dom0's ring page and the dom0 kernel's port (bind_interdomain(0, port))."""
    with open(port) as f:
        remote_port = int(f.read().strip())
    return Dom0Page(kva), remote_port
