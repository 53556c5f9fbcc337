"""Fixtures shared by the stand-in tests: the library, a fresh ``$FAKEXEN_DIR``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fakexen_support import FakeXen, build_library


@pytest.fixture(scope="session")
def fakexen_library() -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build tests/fakexen/libfakexen.so")
    if not Path("/usr/include/xenevtchn.h").exists():
        pytest.skip("libxen-dev headers (xenevtchn.h) are not installed")
    return build_library()


@pytest.fixture
def fx(tmp_path: Path) -> FakeXen:
    return FakeXen(tmp_path / "fx")
