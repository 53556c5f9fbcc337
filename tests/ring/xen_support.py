"""Helpers for the real Xen backend tests (pyxenstored/ring/xen.py).

The backend must see the stand-in hypervisor from process start (LD_PRELOAD
only acts at exec), so the stand-in tests run in a child pytest started with
``LD_PRELOAD=libfakexen.so``; see test_ring_xen_fakexen.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKEXEN_TESTS = REPO / "tests" / "fakexen"
if str(FAKEXEN_TESTS) not in sys.path:
    sys.path.insert(0, str(FAKEXEN_TESTS))

from fakexen_support import FakeXen, build_library  # noqa: E402
from guest import Guest  # noqa: E402

__all__ = ["FakeXen", "Guest", "child_env", "stand_in_library", "stand_in_loaded", "run_python"]


def stand_in_library() -> Path:
    """Build libfakexen.so (once; make is a no-op when up to date) or skip."""
    try:
        return build_library()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot build the stand-in hypervisor: {exc}")


def stand_in_loaded() -> bool:
    """Whether libfakexen.so is mapped into this process (LD_PRELOAD took)."""
    try:
        return "libfakexen.so" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def child_env(*, preload: Path | None, fakexen_dir: Path | None) -> dict[str, str]:
    """Our environment with LD_PRELOAD / FAKEXEN_DIR set, or removed if None."""
    env = dict(os.environ)
    for name, value in (("LD_PRELOAD", preload), ("FAKEXEN_DIR", fakexen_dir)):
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def run_python(
    code: str, env: dict[str, str], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """``python -c code`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
