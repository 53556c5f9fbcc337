"""The stand-in hypervisor's helpers, imported from where the tests keep them.

``tests/fakexen/fakexen_support.py`` (building ``libfakexen.so``, laying out
``$FAKEXEN_DIR``) and ``tests/fakexen/ring_guest.py`` (the async simulated
guest) are test code outside the package; the drill uses them as they are,
the way ``bench/rings.py`` does, rather than keeping a copy.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAKEXEN = REPO / "tests" / "fakexen"
XEN_HEADER = Path("/usr/include/xenevtchn.h")


class Unavailable(Exception):
    """The stand-in cannot be built or loaded here; the message says why."""


def helpers() -> tuple[Any, Any]:
    """``(fakexen_support, ring_guest)``, imported by name from ``tests/fakexen``."""
    if not (FAKEXEN / "fakexen_support.py").exists():
        raise Unavailable(f"{FAKEXEN} is missing: run the drill from a source checkout")
    if str(FAKEXEN) not in sys.path:
        sys.path.insert(0, str(FAKEXEN))
    return importlib.import_module("fakexen_support"), importlib.import_module("ring_guest")


def build() -> Path:
    """Build ``libfakexen.so`` as the tests' fixture does (``make -C tests/fakexen``,
    a no-op when up to date) and return its path."""
    missing = [tool for tool in ("gcc", "make") if shutil.which(tool) is None]
    if missing:
        raise Unavailable(f"{' and '.join(missing)} needed to build libfakexen.so")
    if not XEN_HEADER.exists():
        raise Unavailable(f"libxen-dev headers ({XEN_HEADER.name}) are not installed")
    support, _ = helpers()
    try:
        return Path(support.build_library())
    except Exception as exc:  # the build failed
        raise Unavailable(f"cannot build libfakexen.so: {exc}") from exc
