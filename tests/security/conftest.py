"""Shared fixtures for the advisory suite (xenstore-spec.md section 10).

The suite reuses the project's existing drivers rather than copying them:
the pure-engine ``Harness``/``World`` (tests/engine/engine_harness.py), the
live-daemon helpers (tests/integration/integration_support.py), the
ring-page helpers (tests/ring/ring_support.py) and the stand-in hypervisor
scenarios (tests/fakexen/advisory_support.py). Their directories go on
``sys.path`` here, so the test modules import them by plain name.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
for _sub in ("engine", "integration", "ring", "fakexen"):
    _path = str(TESTS / _sub)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from engine_harness import Harness, World  # noqa: E402
from integration_support import Daemon, finish_daemon, start_daemon  # noqa: E402


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def world(h: Harness) -> World:
    return World(h)


@pytest.fixture
def low_recursion_limit() -> Iterator[None]:
    """Any recursion per tree level would overflow this on a 1,000-level tree."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A real pyxenstored on a temporary socket; the test fails if it crashed,
    ignored SIGTERM or logged an internal error."""
    running = start_daemon()
    try:
        yield running
    finally:
        problem = finish_daemon(running)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def fakexen_library() -> Path:
    """The stand-in hypervisor library (tests/fakexen), built once."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build tests/fakexen/libfakexen.so")
    if not Path("/usr/include/xenevtchn.h").exists():
        pytest.skip("libxen-dev headers (xenevtchn.h) are not installed")
    from fakexen_support import build_library

    return build_library()
