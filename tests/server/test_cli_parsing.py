"""The ``pyxenstored`` command line: C xenstored's flags into Config and DaemonOptions."""

import os
from typing import Any

import pytest

from pyxenstored.cli import UsageError, main, parse_args, parse_uint, resolve_socket_path
from pyxenstored.config import (
    DEFAULT_HARD_QUOTAS,
    DEFAULT_SOFT_QUOTAS,
    DEFAULT_TRACE_SWITCHES,
    Config,
)
from pyxenstored.persist.files import Durability
from pyxenstored.server import DaemonOptions

ENV: dict[str, str] = {}


def parse(*argv: str, environ: dict[str, str] | None = None) -> DaemonOptions:
    options = parse_args(list(argv), ENV if environ is None else environ, warn=False)
    assert options is not None
    return options


def hard(options: DaemonOptions, name: str) -> int:
    return options.config.hard_quotas[name]


def test_defaults() -> None:
    options = parse()
    config = options.config
    assert config == Config()
    assert config.hard_quotas == DEFAULT_HARD_QUOTAS
    assert config.soft_quotas == DEFAULT_SOFT_QUOTAS
    assert (config.priv_domid, config.store_domid) == (0, 0)
    assert options.socket_path == "/var/run/xenstored/socket"
    assert options.state_dir == "/run/pyxenstored"
    assert options.durability is Durability.WRITE and not options.recover_truncate
    assert options.pid_file is None and options.config.trace_file is None
    assert not options.no_fork and not options.live_update and not options.verbose
    assert options.config.trace_switches == DEFAULT_TRACE_SWITCHES
    assert options.event_port is None


QUOTA_FLAGS = [
    (["-E", "7"], "nodes", 7),
    (["--entry-nb", "7"], "nodes", 7),
    (["--entry-nb=8"], "nodes", 8),
    (["-E9"], "nodes", 9),
    (["-S", "100"], "node-size", 100),
    (["--entry-size", "100"], "node-size", 100),
    (["-W", "3"], "watches", 3),
    (["--watch-nb", "3"], "watches", 3),
    (["-t", "2"], "transactions", 2),
    (["--transaction", "2"], "transactions", 2),
    (["-A", "4"], "node-permissions", 4),
    (["--perm-nb", "4"], "node-permissions", 4),
    (["-M", "100"], "path-max", 100),
    (["--path-max", "100"], "path-max", 100),
    (["-M", "5000"], "path-max", 2048),  # capped at XENSTORE_REL_PATH_MAX, as C
    (["-Q", "path-max=5000"], "path-max", 5000),  # C caps only -M
    (["-Q", "path-length=300"], "path-max", 300),
    (["-Q", "nodes=11"], "nodes", 11),
    (["--quota", "watches=12"], "watches", 12),
    (["-Q", "outstanding=13"], "outstanding", 13),
    (["-Q", "memory=14"], "memory", 14),
    (["-Q", "transactions=15"], "transactions", 15),
    (["-Q", "transaction-nodes=16"], "transaction-nodes", 16),
    (["-Q", "node-permissions=17"], "node-permissions", 17),
    (["-Q", "node-size=18"], "node-size", 18),
    (["-Q", "nodes=0"], "nodes", 0),  # 0: unlimited
    (["-E", " +5"], "nodes", 5),  # strtoul skips space and takes a sign
    (["-E", "2147483647"], "nodes", 2**31 - 1),
]


@pytest.mark.parametrize(("argv", "name", "value"), QUOTA_FLAGS)
def test_hard_quota_flags(argv: list[str], name: str, value: int) -> None:
    options = parse(*argv)
    assert hard(options, name) == value
    others = {k: v for k, v in options.config.hard_quotas.items() if k != name}
    assert others == {k: v for k, v in DEFAULT_HARD_QUOTAS.items() if k != name}


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["-K"], "keep_orphans", True),
        (["--keep-orphans"], "keep_orphans", True),
        (["-w", "watch-event=5"], "watch_event_timeout", 5),
        (["--timeout", "watch-event=0"], "watch_event_timeout", 0),
        (["-m", "3"], "store_domid", 3),
        (["-m", "3"], "priv_domid", 3),  # priv defaults to the store domain
        (["--master-domid", "4"], "store_domid", 4),
        (["--priv-domid", "5"], "priv_domid", 5),
        (["--priv-domid", "5"], "store_domid", 5),  # and the store domain to priv
        (["-m", "1", "--priv-domid", "0"], "store_domid", 1),
        (["-m", "1", "--priv-domid", "0"], "priv_domid", 0),
    ],
)
def test_config_flags(argv: list[str], field: str, value: Any) -> None:
    assert getattr(parse(*argv).config, field) == value


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["-N"], "no_fork", True),
        (["--no-fork"], "no_fork", True),
        (["-V"], "verbose", True),
        (["--verbose"], "verbose", True),
        (["-U"], "live_update", True),
        (["--live-update"], "live_update", True),
        (["--event", "9"], "event_port", 9),
        (["-F", "/run/x.pid"], "pid_file", "/run/x.pid"),
        (["--pid-file", "/run/x.pid"], "pid_file", "/run/x.pid"),
        (["-T", "/tmp/t"], "config.trace_file", "/tmp/t"),
        (["--trace-file=/tmp/t"], "config.trace_file", "/tmp/t"),
        (["--socket", "/tmp/s"], "socket_path", "/tmp/s"),
        (["--state-dir", "/tmp/st"], "state_dir", "/tmp/st"),
        (["-N"], "run_dir", "/var/run/xenstored"),
        (["--trace-control=-io"], "config.trace_switches", frozenset({"obj"})),
        (["--trace-control", "-io"], "config.trace_switches", frozenset({"obj"})),
        (["--trace-control=+wrl"], "config.trace_switches", frozenset({"obj", "io", "wrl"})),
        (
            ["--trace-control=-obj", "--trace-control=+tdb", "--trace-control=+acc"],
            "config.trace_switches",
            frozenset({"io", "tdb", "acc"}),
        ),
    ],
)
def test_daemon_flags(argv: list[str], field: str, value: Any) -> None:
    target: Any = parse(*argv)
    for name in field.split("."):
        target = getattr(target, name)
    assert target == value


def test_soft_quota() -> None:
    options = parse("-q", "memory=1000")
    assert options.config.soft_quotas == {"memory": 1000}
    assert options.config.hard_quotas == DEFAULT_HARD_QUOTAS


def test_options_apply_in_command_line_order() -> None:
    assert hard(parse("-E", "5", "-Q", "nodes=7"), "nodes") == 7
    assert hard(parse("-Q", "nodes=7", "-E", "5"), "nodes") == 5
    assert hard(parse("-M", "100", "-Q", "path-max=4000"), "path-max") == 4000


def test_relative_paths_become_absolute() -> None:
    options = parse("-T", "t.log", "-F", "x.pid", "--socket", "s", "--state-dir", "st")
    cwd = os.getcwd()
    assert options.config.trace_file == os.path.join(cwd, "t.log")
    assert options.pid_file == os.path.join(cwd, "x.pid")
    assert options.socket_path == os.path.join(cwd, "s")
    assert options.state_dir == os.path.join(cwd, "st")


def test_many_flags_together() -> None:
    options = parse(
        "-N", "-E", "100", "-W", "10", "-Q", "memory=4096", "-K", "--priv-domid", "1",
        "-w", "watch-event=3", "--socket", "/tmp/s", "-V",
    )  # fmt: skip
    assert options.no_fork and options.verbose
    config = options.config
    assert config.hard_quotas["nodes"] == 100
    assert config.hard_quotas["watches"] == 10
    assert config.hard_quotas["memory"] == 4096
    assert config.keep_orphans
    assert (config.priv_domid, config.store_domid) == (1, 1)
    assert config.watch_event_timeout == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-E", "x"], 'invalid parameter value "x"'),
        (["-E", ""], 'invalid parameter value ""'),
        (["-E", "5x"], 'invalid parameter value "5x"'),
        (["-E", "-1"], 'invalid parameter value "-1"'),
        (["-E", "2147483648"], 'invalid parameter value "2147483648"'),
        (["-m", "abc"], 'invalid parameter value "abc"'),
        (["--priv-domid", "1.5"], 'invalid parameter value "1.5"'),
        (["--event", "-3"], 'invalid parameter value "-3"'),
        (["-Q", "nodes"], "quotas must be specified via <what>=<nb>"),
        (["-Q", "bogus=1"], 'unknown quota "bogus=1"'),
        (["-Q", "bogus=x"], 'invalid parameter value "x"'),  # C checks the value first
        (["-Q", "nodes=-2"], 'invalid parameter value "-2"'),
        (["-q", "nodes=1"], 'unknown quota "nodes=1"'),  # only memory has a soft quota
        (["-w", "5"], "quotas must be specified via <what>=<seconds>"),
        (["-w", "other=5"], 'unknown timeout "other=5"'),
        (["-w", "watch-event=soon"], 'invalid parameter value "soon"'),
        (["--trace-control=io"], 'Illegal trace switch "io"'),
        (["--trace-control=+nope"], 'Illegal trace switch "+nope"'),
        (["stray"], "pyxenstored: No arguments desired"),
    ],
)
def test_invalid_values(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(*argv)
    assert str(info.value) == message


def test_missing_option_argument() -> None:
    with pytest.raises(UsageError):
        parse("-E")


def test_parse_uint_matches_strtoul() -> None:
    assert parse_uint("0") == 0
    assert parse_uint("-0") == 0
    assert parse_uint("\t12") == 12
    for bad in ("", " ", "+", "1 ", "0x10", "１"):
        with pytest.raises(UsageError):
            parse_uint(bad)


def test_unknown_option_is_ignored_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    options = parse_args(["--frobnicate", "-N"], ENV)
    assert options is not None and options.no_fork
    assert "--frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "environ", "expected"),
    [
        ("/explicit", {"XENSTORED_PATH": "/env", "XENSTORED_RUNDIR": "/rd"}, "/explicit"),
        (None, {"XENSTORED_PATH": "/env/sock", "XENSTORED_RUNDIR": "/rd"}, "/env/sock"),
        (None, {"XENSTORED_RUNDIR": "/rd"}, "/rd/socket"),
        (None, {}, "/var/run/xenstored/socket"),
        (None, {"XENSTORED_PATH": ""}, "/var/run/xenstored/socket"),
    ],
)
def test_socket_path_resolution(option: str | None, environ: dict[str, str], expected: str) -> None:
    assert resolve_socket_path(option, environ) == expected
    argv = ["--socket", option] if option else []
    options = parse(*argv, environ=environ)
    assert options.socket_path == expected
    assert options.run_dir == environ.get("XENSTORED_RUNDIR", "/var/run/xenstored")


def test_socket_path_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENSTORED_RUNDIR", "/somewhere")
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    options = parse_args([], None, warn=False)
    assert options is not None and options.socket_path == "/somewhere/socket"


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-H"]) == 0
    assert main(["--help"]) == 0
    err = capsys.readouterr().err
    assert "--entry-nb" in err and "--socket" in err and "--state-dir" in err


def test_main_invalid_value_is_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-E", "lots"]) == 1
    assert capsys.readouterr().err == 'FATAL: invalid parameter value "lots"\n'


def test_main_stray_argument_is_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-N", "extra"]) == 1
    assert "No arguments desired" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ((), {}, "/run/pyxenstored"),
        ((), {"XENSTORED_RUNDIR": "/rd"}, "/rd/pyxenstored"),
        (("--state-dir", "/explicit"), {"XENSTORED_RUNDIR": "/rd"}, "/explicit"),
    ],
)
def test_state_dir_is_on_tmpfs_by_default(
    argv: tuple[str, ...], environ: dict[str, str], expected: str
) -> None:
    assert parse(*argv, environ=environ).state_dir == expected


@pytest.mark.parametrize("mode", list(Durability))
def test_durability_modes(mode: Durability) -> None:
    assert parse("--durability", mode.value).durability is mode


def test_recover_truncate() -> None:
    assert parse("--recover", "truncate").recover_truncate
    assert not parse("--recover=strict").recover_truncate
