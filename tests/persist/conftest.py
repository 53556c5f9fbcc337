"""Fixtures for the persist tests: the pure-engine harness of tests/engine."""

import sys
from pathlib import Path

import pytest

_ENGINE = str(Path(__file__).resolve().parent.parent / "engine")
if _ENGINE not in sys.path:
    sys.path.insert(0, _ENGINE)

from engine_harness import Harness  # noqa: E402


@pytest.fixture
def h() -> Harness:
    return Harness()
