from collections.abc import Iterator

import pytest
from server_harness import short_tmpdir


@pytest.fixture
def sdir() -> Iterator[str]:
    """A short temporary directory for sockets, traces and state."""
    with short_tmpdir() as path:
        yield path
