"""Fixtures that run a real pyxenstored daemon as a subprocess.

``xenstored`` gives a fresh daemon per test (a ``Daemon``: socket path,
pid, environment for the xenstore-* tools); ``xenstored_socket`` gives
just its socket path; ``shared_xenstored`` is one daemon per module.
At teardown the daemon gets SIGTERM and the test fails unless it exits
with status 0, removes its socket and logged no internal error.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from integration_support import Daemon, finish_daemon, start_daemon


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


@pytest.fixture
def xenstored() -> Iterator[Daemon]:
    daemon = start_daemon()
    try:
        yield daemon
    finally:
        problem = finish_daemon(daemon)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module")
def shared_xenstored() -> Iterator[Daemon]:
    """One daemon for a whole module, for the many small independent tests."""
    daemon = start_daemon()
    try:
        yield daemon
    finally:
        problem = finish_daemon(daemon)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def xenstored_socket(xenstored: Daemon) -> str:
    return xenstored.socket_path


@pytest.fixture
def need_tool():
    """``need_tool("xenstore-read")`` skips the test when the tool is missing."""
    return _need
