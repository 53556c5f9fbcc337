"""Debian's xenstore-* tools (libxenstore) against a real pyxenstored."""

from __future__ import annotations

import subprocess
import time

import pytest
from integration_support import Daemon

pytestmark = pytest.mark.usefixtures("_tools_installed")


@pytest.fixture
def _tools_installed(need_tool) -> None:
    need_tool("xenstore-read")


def xs(daemon: Daemon, *args: str, check: bool = True, timeout: float = 15.0) -> str:
    """Run a xenstore-* tool against the daemon and return its stdout."""
    result = subprocess.run(
        list(args), env=daemon.env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def xs_status(daemon: Daemon, *args: str) -> int:
    return subprocess.run(list(args), env=daemon.env(), capture_output=True, timeout=15).returncode


def test_write_read(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "/it/a", "hello", "/it/b/c", "two words")
    assert xs(xenstored, "xenstore-read", "/it/a") == "hello\n"
    assert xs(xenstored, "xenstore-read", "/it/b/c") == "two words\n"
    # Implicit parents exist with empty values.
    assert xs(xenstored, "xenstore-read", "/it/b") == "\n"
    # Several keys in one call.
    assert xs(xenstored, "xenstore-read", "/it/a", "/it/b/c") == "hello\ntwo words\n"


def test_read_missing_fails(xenstored: Daemon) -> None:
    result = subprocess.run(
        ["xenstore-read", "/no/such/node"], env=xenstored.env(), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "couldn't read path" in result.stderr


def test_relative_path_is_under_domain_0(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "rel/key", "v")
    assert xs(xenstored, "xenstore-read", "/local/domain/0/rel/key") == "v\n"


def test_list_and_ls(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "/it/d/x", "1", "/it/d/y", "2", "/it/d/z/w", "3")
    assert xs(xenstored, "xenstore-list", "/it/d").split() == ["x", "y", "z"]
    ls = xs(xenstored, "xenstore-ls", "/it/d")
    assert ls == 'x = "1"\ny = "2"\nz = ""\n w = "3"\n'
    full = xs(xenstored, "xenstore-ls", "-f", "/it/d")
    assert '/it/d/z/w = "3"' in full.splitlines()
    root = xs(xenstored, "xenstore-ls", "/")
    assert 'tool = ""' in root.splitlines()


def test_rm(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "/it/r/a/b", "1", "/it/r/keep", "2")
    xs(xenstored, "xenstore-rm", "/it/r/a")
    assert xs(xenstored, "xenstore-list", "/it/r").split() == ["keep"]
    assert xs_status(xenstored, "xenstore-read", "/it/r/a/b") != 0
    # Removing a missing node whose parent exists is not an error.
    xs(xenstored, "xenstore-rm", "/it/r/a")


def test_exists(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "/it/e", "1")
    assert xs_status(xenstored, "xenstore-exists", "/it/e") == 0
    assert xs_status(xenstored, "xenstore-exists", "/it/missing") != 0


def test_chmod_and_ls_perms(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "/it/p", "v")
    xs(xenstored, "xenstore-chmod", "/it/p", "n0", "r5", "w7", "b9")
    out = xs(xenstored, "xenstore-ls", "-p", "/it")
    line = next(line for line in out.splitlines() if line.startswith("p = "))
    assert line.endswith("(n0,r5,w7,b9)"), line
    # A malformed mode is refused and changes nothing.
    assert xs_status(xenstored, "xenstore-chmod", "/it/p", "q3") != 0
    out = xs(xenstored, "xenstore-ls", "-p", "/it")
    assert "(n0,r5,w7,b9)" in out


def test_chmod_recursive(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "/it/rc/a/b", "1")
    xs(xenstored, "xenstore-chmod", "-r", "/it/rc", "r0")
    out = xs(xenstored, "xenstore-ls", "-p", "/it/rc")
    assert out.count("(r0)") == 2, out


def test_watch(xenstored: Daemon) -> None:
    xs(xenstored, "xenstore-write", "/it/w", "0")
    watcher = subprocess.Popen(
        ["xenstore-watch", "-n", "3", "/it/w"],
        env=xenstored.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The first event (the watch's own path) is printed once the watch
        # is registered; writing before that could be missed.
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == "/it/w\n"
        xs(xenstored, "xenstore-write", "/it/w/child", "1")
        xs(xenstored, "xenstore-write", "/it/other", "ignored")
        xs(xenstored, "xenstore-rm", "/it/w")
        out, err = watcher.communicate(timeout=15)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert out.splitlines() == ["/it/w/child", "/it/w"]


def test_watch_many_writes(xenstored: Daemon) -> None:
    watcher = subprocess.Popen(
        ["xenstore-watch", "-n", "21", "/it/many"],
        env=xenstored.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == "/it/many\n"
        xs(xenstored, "xenstore-write", *[x for i in range(20) for x in (f"/it/many/{i}", "v")])
        out, _ = watcher.communicate(timeout=15)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert out.splitlines() == [f"/it/many/{i}" for i in range(20)]


def test_many_tool_invocations(xenstored: Daemon) -> None:
    """Each tool opens and closes a connection: 30 in a row must all work."""
    start = time.monotonic()
    for i in range(30):
        xs(xenstored, "xenstore-write", f"/it/loop/{i}", str(i))
    assert len(xs(xenstored, "xenstore-list", "/it/loop").split()) == 30
    assert time.monotonic() - start < 30
