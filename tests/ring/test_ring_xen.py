"""The real Xen backend without a hypervisor: struct layout, flags, and what a
daemon sees on a machine without Xen (spec 7.6, 9.3).

The behaviour under the stand-in hypervisor is in test_ring_xen_fakexen.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from xen_support import child_env, run_python

from pyxenstored.ring import xen
from pyxenstored.ring.xen import DomainState, ffi

XENCTRL_H = Path("/usr/include/xenctrl.h")

# offsetof/sizeof of xc_domaininfo_t as the real headers lay it out, and the
# constants the module copies from them.
PROBE = r"""
#include <stddef.h>
#include <stdio.h>
#include <xenctrl.h>
#define OFF(name, member) printf("off %s %zu\n", name, offsetof(xc_domaininfo_t, member))
#define VAL(name) printf("val %s %lu\n", #name, (unsigned long)(name))
int main(void)
{
    OFF("domain", domain); OFF("flags", flags); OFF("tot_pages", tot_pages);
    OFF("max_pages", max_pages); OFF("outstanding_pages", outstanding_pages);
    OFF("shr_pages", shr_pages); OFF("paged_pages", paged_pages);
    OFF("shared_info_frame", shared_info_frame); OFF("cpu_time", cpu_time);
    OFF("nr_online_vcpus", nr_online_vcpus); OFF("max_vcpu_id", max_vcpu_id);
    OFF("ssidref", ssidref); OFF("handle", handle); OFF("cpupool", cpupool);
    OFF("gpaddr_bits", gpaddr_bits);
    OFF("arch_emulation_flags", arch_config.emulation_flags);
    OFF("arch_misc_flags", arch_config.misc_flags);
    printf("size xc_domaininfo_t %zu\n", sizeof(xc_domaininfo_t));
    VAL(XEN_DOMCTL_INTERFACE_VERSION);
    VAL(XEN_DOMINF_dying); VAL(XEN_DOMINF_hvm_guest); VAL(XEN_DOMINF_shutdown);
    VAL(XEN_DOMINF_paused); VAL(XEN_DOMINF_xs_domain);
    VAL(XEN_DOMINF_shutdownshift); VAL(XEN_DOMINF_shutdownmask);
    VAL(SHUTDOWN_crash); VAL(VIRQ_DOM_EXC); VAL(GNTTAB_RESERVED_XENSTORE);
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    if shutil.which("gcc") is None or not XENCTRL_H.exists():
        pytest.skip("gcc or <xenctrl.h> (libxen-dev) missing")
    work = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(PROBE)
    subprocess.run(["gcc", "-o", str(work / "probe"), str(work / "probe.c")], check=True)
    out: dict[str, dict[str, int]] = {"off": {}, "val": {}, "size": {}}
    for line in subprocess.run(
        [str(work / "probe")], check=True, capture_output=True, text=True
    ).stdout.splitlines():
        kind, name, value = line.split()
        out[kind][name] = int(value)
    return out


def test_domaininfo_layout_matches_xenctrl_h(probe: dict[str, dict[str, int]]) -> None:
    assert probe["val"]["XEN_DOMCTL_INTERFACE_VERSION"] == 0x15, "not Xen 4.17's domctl"
    cffi_offsets = {name: ffi.offsetof("xc_domaininfo_t", name) for name in probe["off"]}
    assert cffi_offsets == probe["off"]
    assert ffi.sizeof("xc_domaininfo_t") == probe["size"]["xc_domaininfo_t"]


def test_constants_match_headers(probe: dict[str, dict[str, int]]) -> None:
    val = probe["val"]
    assert (
        xen.DOMINF_DYING,
        xen.DOMINF_HVM_GUEST,
        xen.DOMINF_SHUTDOWN,
        xen.DOMINF_PAUSED,
        xen.DOMINF_XS_DOMAIN,
        xen.DOMINF_SHUTDOWNSHIFT,
        xen.DOMINF_SHUTDOWNMASK,
        xen.SHUTDOWN_CRASH,
        xen.VIRQ_DOM_EXC,
        xen.GNTTAB_RESERVED_XENSTORE,
    ) == (
        val["XEN_DOMINF_dying"],
        val["XEN_DOMINF_hvm_guest"],
        val["XEN_DOMINF_shutdown"],
        val["XEN_DOMINF_paused"],
        val["XEN_DOMINF_xs_domain"],
        val["XEN_DOMINF_shutdownshift"],
        val["XEN_DOMINF_shutdownmask"],
        val["SHUTDOWN_crash"],
        val["VIRQ_DOM_EXC"],
        val["GNTTAB_RESERVED_XENSTORE"],
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (1 << 5, DomainState()),  # running
        (1 << 0, DomainState(dying=True)),
        (1 << 2 | 2 << 16, DomainState(shutdown=True, shutdown_reason=2)),  # suspend
        (1 << 3 | 1 << 1, DomainState(paused=True, hvm=True)),
        (1 << 7, DomainState(xenstore=True)),
    ],
)
def test_domain_state_from_flags(flags: int, expected: DomainState) -> None:
    assert DomainState.from_flags(flags) == expected


def test_crashed_is_shutdown_with_reason_crash() -> None:
    assert DomainState.from_flags(1 << 2 | 3 << 16).crashed
    assert not DomainState.from_flags(3 << 16).crashed  # reason without shutdown
    assert not DomainState.from_flags(1 << 2).crashed  # poweroff


OPEN_ALL = """
import json
from pyxenstored.ring import xen
{patch}
out = {{}}
for cls in (xen.XenEventChannels, xen.XenGrants, xen.XenDomains):
    try:
        cls()
        out[cls.__name__] = None
    except OSError as exc:
        out[cls.__name__] = [exc.errno, exc.strerror]
print(json.dumps(out))
"""


def _open_all(patch: str = "") -> dict[str, list[object] | None]:
    proc = run_python(OPEN_ALL.format(patch=patch), child_env(preload=None, fakexen_dir=None))
    assert proc.returncode == 0, proc.stderr  # an exception, not a crash
    result: dict[str, list[object] | None] = json.loads(proc.stdout)
    return result


def test_without_xen_opening_raises_oserror() -> None:
    """Debian's real libraries on a host with no hypervisor: a clear ENOENT."""
    if os.path.exists("/dev/xen/evtchn") or os.path.exists("/proc/xen/privcmd"):
        pytest.skip("this machine runs on Xen")
    for name in (xen.EVTCHN_LIBRARY, xen.GNTTAB_LIBRARY, xen.CTRL_LIBRARY):
        if not any(Path(d, name).exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib")):
            pytest.skip(f"{name} is not installed")
    result = _open_all()
    assert result == {
        "XenEventChannels": [errno.ENOENT, "xenevtchn_open: No such file or directory"],
        "XenGrants": [errno.ENOENT, "xengnttab_open: No such file or directory"],
        "XenDomains": [errno.ENOENT, "xc_interface_open: No such file or directory"],
    }


def test_missing_libraries_raise_elibacc() -> None:
    """No library and no stand-in: OSError naming the library, not AttributeError."""
    result = _open_all(
        "xen.EVTCHN_LIBRARY = 'libxenevtchn-absent.so.1'\n"
        "xen.GNTTAB_LIBRARY = 'libxengnttab-absent.so.1'\n"
        "xen.CTRL_LIBRARY = 'libxenctrl-absent.so.4.17'\n"
    )
    for name, soname in (
        ("XenEventChannels", "libxenevtchn-absent.so.1"),
        ("XenGrants", "libxengnttab-absent.so.1"),
        ("XenDomains", "libxenctrl-absent.so.4.17"),
    ):
        err = result[name]
        assert err is not None
        assert err[0] == errno.ELIBACC
        assert soname in str(err[1])
