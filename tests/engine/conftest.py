import pytest
from engine_harness import Harness, World


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def world(h: Harness) -> World:
    return World(h)
