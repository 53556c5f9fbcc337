"""The stand-in hypervisor for the benchmarks, with room for a boot storm.

The daemons run on the project's stand-in (``tests/fakexen``,
docs/testing.md): ``libfakexen.so`` LD_PRELOADed, ``$FAKEXEN_DIR`` laid out
by ``fakexen_support.FakeXen``. The boot storm gives nodes to domains 1..N
(``SET_PERMS`` with owner N), and every daemon checks with the hypervisor
that the owner exists; the stand-in's domain list, however, holds at most
256 domains (``xc_domain_getinfolist`` reads the first 256 lines of
``$FAKEXEN_DIR/domains``), so a storm of 300 VMs would fail on domain 256.

So the benchmark builds its own copy of the library from the same
``tests/fakexen/fakexen.c`` with only that bound raised (to
``MAX_DOMAINS``), in ``bench/.build/``. Nothing else differs: the daemons
see the same library the tests use, with a longer domain list. If the
source no longer has the expected lines, the stock library is used and
``max_domains`` says 255.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drills import fakexen

BUILD = Path(__file__).resolve().parent / ".build"
MAX_DOMAINS = 1024
STOCK_MAX_DOMAINS = 255
#: The stand-in's fixed bound on its domain list, and what replaces it.
_PATCHES = (
    ("struct fx_dom doms[256];", f"struct fx_dom doms[{MAX_DOMAINS}];"),
    ("fx_read_domains(doms, 256)", f"fx_read_domains(doms, {MAX_DOMAINS})"),
    ("xc_domaininfo_t raw[256];", f"xc_domaininfo_t raw[{MAX_DOMAINS}];"),
    ("if (max > 256)", f"if (max > {MAX_DOMAINS})"),
    ("max = 256;", f"max = {MAX_DOMAINS};"),
)


class Unavailable(Exception):
    """The stand-in cannot be built here; the message says why."""


@dataclass(frozen=True)
class StandIn:
    library: Path
    #: ``tests/fakexen/fakexen_support``.
    support: Any
    #: The highest domain id the stand-in can list as existing.
    max_domains: int

    def layout(self, directory: Path, domains: int = 0) -> Any:
        """A ``FakeXen`` under ``directory``, domains 1..``domains`` running."""
        fx = self.support.FakeXen(directory)
        if domains > self.max_domains:
            raise Unavailable(
                f"the stand-in lists at most {self.max_domains} domains, {domains} asked for"
            )
        fx.domains.update(dict.fromkeys(range(1, domains + 1), "running"))
        fx.set_domain(0, "running")  # rewrites the file with all of them
        return fx

    def env(self, fx: Any, run_dir: Path) -> dict[str, str]:
        """A daemon's environment on this stand-in (as ``fakexen_support``)."""
        env = dict(os.environ)
        env.update(
            LD_PRELOAD=str(self.library),
            FAKEXEN_DIR=str(fx.root),
            XENSTORED_RUNDIR=str(run_dir),
            XENSTORED_PATH=str(run_dir / "socket"),
        )
        return env


def _patched_source(text: str) -> str | None:
    for old, new in _PATCHES:
        if text.count(old) != 1:
            return None
        text = text.replace(old, new)
    return text


def build_bench_library(source: Path, build: Path = BUILD) -> Path | None:
    """``libfakexen.so`` with a longer domain list, or None if the source has
    changed shape; rebuilt only when ``fakexen.c`` or its map is newer."""
    text = _patched_source(source.read_text())
    if text is None:
        return None
    build.mkdir(exist_ok=True)
    (build / ".gitignore").write_text("*\n")
    library = build / "libfakexen.so"
    patched = build / "fakexen.c"
    mapfile = source.with_name("fakexen.map")
    newest = max(source.stat().st_mtime, mapfile.stat().st_mtime, Path(__file__).stat().st_mtime)
    if library.exists() and library.stat().st_mtime >= newest and patched.exists():
        return library
    patched.write_text(text)
    subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-O2", "-fPIC", "-shared",
         f"-Wl,--version-script={mapfile}", "-o", str(library), str(patched), "-ldl"],
        check=True,
        capture_output=True,
    )
    return library


def open_standin() -> StandIn:
    """Build the stand-in (the tests' own, then the bench's variant)."""
    try:
        stock = fakexen.build()
        support, _ = fakexen.helpers()
    except fakexen.Unavailable as exc:
        raise Unavailable(str(exc)) from exc
    try:
        library = build_bench_library(fakexen.FAKEXEN / "fakexen.c")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise Unavailable(f"cannot build the bench's libfakexen.so: {exc}") from exc
    if library is None:
        return StandIn(stock, support, STOCK_MAX_DOMAINS)
    return StandIn(library, support, MAX_DOMAINS)
