"""The ring page layout against the real <xen/io/xs_wire.h> (spec 7.1).

Every table row starts with the spec section it checks.
"""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyxenstored.ring import layout
from pyxenstored.ring.layout import (
    FIELDS,
    INTERFACE_SIZE,
    INTERFACE_TYPE,
    PAGE_SIZE,
    RING_SIZE,
    Connection,
    Feature,
    RingError,
    RingPage,
    ffi,
)

HEADER = Path("/usr/include/xen/io/xs_wire.h")

# The probe prints "name value" lines: field offsets and sizes, the struct
# size, and every constant the header defines. evtchn_port and feature bits
# 4/8 are newer than some installed headers (spec 7.1 [DISCREPANCY]), so they
# are probed under a macro / #ifdef.
PROBE = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <xen/io/xs_wire.h>
#define S struct xenstore_domain_interface
#define FIELD(f) printf("offset.%s %zu\nsize.%s %zu\n", #f, offsetof(S, f), #f, sizeof(((S *)0)->f))
#define CONST(c) printf("%s %ld\n", #c, (long)(c))
int main(void) {
    FIELD(req); FIELD(rsp);
    FIELD(req_cons); FIELD(req_prod); FIELD(rsp_cons); FIELD(rsp_prod);
    FIELD(server_features); FIELD(connection); FIELD(error);
#ifdef PROBE_EVTCHN_PORT
    FIELD(evtchn_port);
#endif
    printf("sizeof %zu\n", sizeof(S));
    printf("sizeof_idx %zu\n", sizeof(XENSTORE_RING_IDX));
    CONST(XENSTORE_RING_SIZE);
    CONST(MASK_XENSTORE_IDX(0xFFFFFFFFu));
    CONST(XENSTORE_SERVER_FEATURE_RECONNECTION);
    CONST(XENSTORE_SERVER_FEATURE_ERROR);
#ifdef XENSTORE_SERVER_FEATURE_WATCHDEPTH
    CONST(XENSTORE_SERVER_FEATURE_WATCHDEPTH);
#endif
#ifdef XENSTORE_SERVER_FEATURE_DOMID_ANY
    CONST(XENSTORE_SERVER_FEATURE_DOMID_ANY);
#endif
    CONST(XENSTORE_CONNECTED); CONST(XENSTORE_RECONNECT);
    CONST(XENSTORE_ERROR_NONE); CONST(XENSTORE_ERROR_COMM);
    CONST(XENSTORE_ERROR_RINGIDX); CONST(XENSTORE_ERROR_PROTO);
    return 0;
}
"""


def _compile_and_run(tmp: Path, cc: str, defines: list[str]) -> dict[str, int] | None:
    src = tmp / "probe.c"
    exe = tmp / "probe"
    src.write_text(PROBE)
    built = subprocess.run(
        [cc, *defines, "-o", str(exe), str(src)], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        return None
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], bool]:
    """(probe output, whether the header has evtchn_port)."""
    if not HEADER.exists():
        pytest.skip(f"{HEADER} not installed (Debian: libxen-dev); cannot compare layouts")
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) to compile the xs_wire.h probe")
    tmp = tmp_path_factory.mktemp("xs_wire_probe")
    values = _compile_and_run(tmp, cc, ["-DPROBE_EVTCHN_PORT"])
    if values is not None:
        return values, True
    values = _compile_and_run(tmp, cc, [])
    if values is None:
        pytest.fail("the xs_wire.h probe does not compile even without evtchn_port")
    return values, False


C_FIELDS = [f for f in FIELDS if f != "evtchn_port"]


@pytest.mark.parametrize("field", C_FIELDS)
def test_field_offset_and_size_match_header(
    c_layout: tuple[dict[str, int], bool], field: str
) -> None:
    # spec 7.1: every field of the cffi struct sits where the C compiler puts it
    values, _ = c_layout
    assert ffi.offsetof(INTERFACE_TYPE, field) == values[f"offset.{field}"]
    ftype = dict(ffi.typeof(INTERFACE_TYPE).fields)[field].type
    assert ffi.sizeof(ftype) == values[f"size.{field}"]


def test_struct_size_and_evtchn_port_match_header(c_layout: tuple[dict[str, int], bool]) -> None:
    # spec 7.1: evtchn_port (offset 2076) was appended in newer headers; with
    # an older header it must sit exactly at that header's end.
    values, has_port = c_layout
    if has_port:
        assert ffi.offsetof(INTERFACE_TYPE, "evtchn_port") == values["offset.evtchn_port"]
        assert ffi.sizeof(INTERFACE_TYPE) == values["sizeof"]
    else:
        assert ffi.offsetof(INTERFACE_TYPE, "evtchn_port") == values["sizeof"]
        assert ffi.sizeof(INTERFACE_TYPE) == values["sizeof"] + 4
    assert values["sizeof_idx"] == 4


CONSTANTS = [
    # (spec, C name, our value)
    ("spec 7.1", "XENSTORE_RING_SIZE", RING_SIZE),
    ("spec 7.2", "MASK_XENSTORE_IDX(0xFFFFFFFFu)", layout.RING_MASK),
    ("spec 7.1", "XENSTORE_SERVER_FEATURE_RECONNECTION", Feature.RECONNECTION),
    ("spec 7.1", "XENSTORE_SERVER_FEATURE_ERROR", Feature.ERROR),
    ("spec 7.1", "XENSTORE_SERVER_FEATURE_WATCHDEPTH", Feature.WATCHDEPTH),
    ("spec 7.1", "XENSTORE_SERVER_FEATURE_DOMID_ANY", Feature.DOMID_ANY),
    ("spec 7.4", "XENSTORE_CONNECTED", Connection.CONNECTED),
    ("spec 7.4", "XENSTORE_RECONNECT", Connection.RECONNECT),
    ("spec 7.1", "XENSTORE_ERROR_NONE", RingError.NONE),
    ("spec 7.1", "XENSTORE_ERROR_COMM", RingError.COMM),
    ("spec 7.1", "XENSTORE_ERROR_RINGIDX", RingError.RINGIDX),
    ("spec 7.1", "XENSTORE_ERROR_PROTO", RingError.PROTO),
]


@pytest.mark.parametrize(("spec", "name", "ours"), CONSTANTS, ids=[r[1] for r in CONSTANTS])
def test_constants_match_header(
    c_layout: tuple[dict[str, int], bool], spec: str, name: str, ours: int
) -> None:
    values, _ = c_layout
    if name not in values:
        pytest.skip(f"{spec}: {name} is not defined by the installed {HEADER}")
    assert values[name] == ours


OFFSETS = [
    # (spec, field, offset) -- the spec's own table, independent of any header
    ("spec 7.1", "req", 0),
    ("spec 7.1", "rsp", 1024),
    ("spec 7.1", "req_cons", 2048),
    ("spec 7.1", "req_prod", 2052),
    ("spec 7.1", "rsp_cons", 2056),
    ("spec 7.1", "rsp_prod", 2060),
    ("spec 7.1", "server_features", 2064),
    ("spec 7.1", "connection", 2068),
    ("spec 7.1", "error", 2072),
    ("spec 7.1", "evtchn_port", 2076),
]


@pytest.mark.parametrize(("spec", "field", "offset"), OFFSETS, ids=[r[1] for r in OFFSETS])
def test_offsets_match_spec_table(spec: str, field: str, offset: int) -> None:
    assert layout.offsets()[field] == offset
    assert INTERFACE_SIZE == 2080 <= PAGE_SIZE


def test_page_view_aliases_bytearray() -> None:
    # spec 7.1: native-endian u32s at the documented offsets, no copy
    buffer = bytearray(PAGE_SIZE)
    page = RingPage(buffer)
    page.iface.rsp_prod = 0x01020304
    assert buffer[2060:2064] == (0x01020304).to_bytes(4, sys.byteorder)
    buffer[2052:2056] = (7).to_bytes(4, sys.byteorder)
    assert page.iface.req_prod == 7
    page.rsp[0:3] = b"abc"
    assert buffer[1024:1027] == b"abc"
    assert len(page.req) == len(page.rsp) == RING_SIZE


def test_page_view_of_mmap_and_release() -> None:
    # spec 7.6: rings come as mmaps (xsd_kva, grant mappings)
    with mmap.mmap(-1, PAGE_SIZE) as m:
        page = RingPage(m)
        page.iface.connection = Connection.RECONNECT
        assert m[2068:2072] != b"\0\0\0\0"
        page.release()
        # released: the mmap can be closed by the with-block without BufferError


def test_page_view_rejects_small_or_readonly_buffers() -> None:
    # spec 7.1: the view must cover the whole struct and be writable
    with pytest.raises(ValueError):
        RingPage(bytearray(INTERFACE_SIZE - 1))
    with pytest.raises(BufferError):
        RingPage(bytes(PAGE_SIZE))
