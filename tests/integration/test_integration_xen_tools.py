"""Xen's own test-xenstore and xenstore-control against a real pyxenstored."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from integration_support import Daemon

XEN_BIN = "/usr/lib/xen-4.17/bin"
TEST_XENSTORE = os.path.join(XEN_BIN, "test-xenstore")
XENSTORE_CONTROL = os.path.join(XEN_BIN, "xenstore-control")

#: The tests test-xenstore 4.17 runs, in its order.
TEST_NAMES = [
    "read 1",
    "read 2000",
    "write 1",
    "write 2000",
    "dir",
    "rm node",
    "rm dir",
    "ta empty",
    "ta empty x",
    "ta rmw",
    "ta rmw x",
    "ta err",
]
PASSED = re.compile(r"^(?P<name>.{10}): avg: \d+ ns \(\d+ ns \.\. \d+ ns\)$")


def _require(path: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not installed")


def run(daemon: Daemon, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=daemon.env(), capture_output=True, text=True, timeout=timeout
    )


# -- test-xenstore --------------------------------------------------------------------


def test_test_xenstore_list() -> None:
    _require(TEST_XENSTORE)
    result = subprocess.run([TEST_XENSTORE, "-l"], capture_output=True, text=True, timeout=10)
    names = [line.split(":")[0].rstrip() for line in result.stdout.splitlines()]
    assert names == TEST_NAMES


def test_test_xenstore_iterations(xenstored: Daemon) -> None:
    _require(TEST_XENSTORE)
    result = run(xenstored, TEST_XENSTORE, "-i", "10")
    lines = result.stdout.splitlines()
    failed = [line for line in lines if "failed" in line]
    assert not failed, result.stdout + result.stderr
    passed = []
    for line in lines:
        match = PASSED.match(line)
        if match:
            passed.append(match["name"].rstrip())
    assert passed == TEST_NAMES, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_xenstore_random(xenstored: Daemon) -> None:
    """Random test order for 5 s; it prints only failures (and retry notes)."""
    _require(TEST_XENSTORE)
    result = run(xenstored, TEST_XENSTORE, "-r", "5")
    assert "failed" not in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_xenstore_leaves_no_nodes(xenstored: Daemon) -> None:
    _require(TEST_XENSTORE)
    assert run(xenstored, TEST_XENSTORE, "-t", "rm dir").returncode == 0
    ls = subprocess.run(
        ["xenstore-ls", "/local/domain/0"], env=xenstored.env(), capture_output=True, text=True
    )
    assert "xenstore-test" not in ls.stdout


# -- xenstore-control -----------------------------------------------------------------


def control(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    _require(XENSTORE_CONTROL)
    return run(daemon, XENSTORE_CONTROL, *args, timeout=20)


def test_control_check(xenstored: Daemon) -> None:
    subprocess.run(["xenstore-write", "/ctl/a/b", "1"], env=xenstored.env(), check=True)
    result = control(xenstored, "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_control_quota(xenstored: Daemon) -> None:
    result = control(xenstored, "quota")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Quota settings:"
    table = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        name, _, rest = line.partition(":")
        value, _, description = rest.strip().partition(" ")
        table[name.strip()] = (int(value), description.strip())
    # C xenstored's defaults (spec 6.1).
    assert table["nodes"] == (1000, "Nodes per domain")
    assert table["watches"] == (128, "Watches per domain")
    assert table["transactions"] == (10, "Active transactions per domain")
    assert table["transaction-nodes"][0] == 1024
    assert table["node-permissions"][0] == 5
    assert table["path-max"][0] == 2048
    assert table["node-size"][0] == 2048
    assert table["outstanding"][0] == 20
    assert "memory" in table


def test_control_quota_domain(xenstored: Daemon) -> None:
    result = control(xenstored, "quota", "0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Domain 0:"
    usage = {}
    for line in lines[1:]:
        match = re.match(r"^(\S+)\s*:\s*(\d+) \(max\s+(\d+)\)$", line)
        if match:
            usage[match[1]] = (int(match[2]), int(match[3]))
    assert usage["nodes"][0] >= 3  # /, /tool, /tool/xenstored at least
    assert usage["nodes"][1] == 1000


def test_control_quota_set(xenstored: Daemon) -> None:
    assert control(xenstored, "quota", "set", "nodes", "2000").returncode == 0
    result = control(xenstored, "quota")
    nodes = next(line for line in result.stdout.splitlines() if line.startswith("nodes "))
    assert re.match(r"^nodes\s*:\s*2000 ", nodes), nodes


def test_control_help(xenstored: Daemon) -> None:
    result = control(xenstored, "help")
    assert result.returncode == 0, result.stderr
    commands = [line.split()[0] for line in result.stdout.splitlines() if line[:1].isalpha()]
    for command in ("check", "log", "logfile", "memreport", "print", "quota", "quota-soft", "help"):
        assert command in commands, result.stdout
    quota = next(line for line in result.stdout.splitlines() if line.startswith("quota "))
    assert quota == "quota           [set <name> <val>|<domid>|max [-r]]"


def test_control_unknown_command(xenstored: Daemon) -> None:
    result = control(xenstored, "no-such-command")
    assert result.returncode != 0
    # xenstore-control falls back to listing the valid commands.
    assert "check" in result.stdout + result.stderr
