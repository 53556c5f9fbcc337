"""XS_CONTROL subcommands of C xenstored (spec 1.6).

Commands that touch files or the log only record an effect for the shell;
the reply texts follow C's formats so that ``xenstore-control`` output looks
the same.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from pyxenstored.config import QUOTA_DESCRIPTIONS, QUOTA_NAMES, TRACE_SWITCHES, Config
from pyxenstored.effects import LogMessage, MemoryReport, TraceFile, TraceSwitches
from pyxenstored.protocol.args import atoi
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.requests import Control
from pyxenstored.protocol.wire import OK_PAYLOAD
from pyxenstored.store.consistency import check_tree

if TYPE_CHECKING:
    from pyxenstored.engine.engine import Engine

@attrs.define
class ControlState:
    """Trace settings as C keeps them: a file name and the switches, in C's order."""

    trace_file: str | None
    switches: dict[str, bool]

    @classmethod
    def from_config(cls, config: Config) -> "ControlState":
        return cls(
            config.trace_file,
            {name: name in config.trace_switches for name in TRACE_SWITCHES},
        )


def _text(text: str) -> bytes:
    return text.encode() + b"\0"


def _check(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if args:
        raise XenstoreError("EINVAL")
    for problem in check_tree(engine.tree):
        engine.emit(LogMessage(f"check: {problem}"))
    return OK_PAYLOAD


def _log(engine: "Engine", args: tuple[str, ...]) -> bytes:
    state = engine.control_state
    if not args:
        lines = "".join(
            f"{name:<8}: {'on' if on else 'off'}\n" for name, on in state.switches.items()
        )
        return _text("Log switch settings:\n" + lines)
    if len(args) != 1:
        raise XenstoreError("EINVAL")
    arg = args[0]
    if arg == "on":
        # C reopens the trace file it was given; with none, nothing happens.
        if state.trace_file is not None:
            engine.emit(TraceFile(state.trace_file))
    elif arg == "off":
        engine.emit(TraceFile(None))
    elif arg[:1] in ("+", "-") and arg[1:] in state.switches:
        state.switches[arg[1:]] = arg[0] == "+"
        engine.emit(TraceSwitches(frozenset(name for name, on in state.switches.items() if on)))
    else:
        raise XenstoreError("EINVAL")
    return OK_PAYLOAD


def _logfile(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if len(args) != 1:
        raise XenstoreError("EINVAL")
    state = engine.control_state
    state.trace_file = args[0]
    engine.emit(TraceFile(args[0]))
    return OK_PAYLOAD


def _memreport(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if len(args) > 1:
        raise XenstoreError("EINVAL")
    if not args and engine.control_state.trace_file is None:
        # C answers EBADF, which is not in the wire table: EINVAL.
        raise XenstoreError("EINVAL")
    engine.emit(MemoryReport(args[0] if args else None, memory_report(engine)))
    return OK_PAYLOAD


def memory_report(engine: "Engine") -> str:
    usage = engine.tree.accounting.usage
    lines = [
        f"nodes: {len(engine.tree.nodes)}",
        f"connections: {len(engine.connections)}",
        f"watches: {sum(len(c.watches) for c in engine.connections.values())}",
        f"transactions: {sum(len(c.transactions) for c in engine.connections.values())}",
    ]
    lines += [f"domain {domid}: {entry}" for domid, entry in sorted(usage.items())]
    return "\n".join(lines) + "\n"


def _print(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if len(args) != 1:
        raise XenstoreError("EINVAL")
    engine.emit(LogMessage(f"control: {args[0]}"))
    return OK_PAYLOAD


def _quota_table(values: dict[str, int]) -> bytes:
    lines = "".join(
        f"{name:<17}: {values[name]:>8} {QUOTA_DESCRIPTIONS[name]}\n"
        for name in QUOTA_NAMES
        if name in values
    )
    return _text("Quota settings:\n" + lines)


def _quota_set(values: dict[str, int], args: tuple[str, ...]) -> bytes:
    if len(args) != 2:
        raise XenstoreError("EINVAL")
    value = atoi(args[1])
    if value < 1 or args[0] not in values:
        raise XenstoreError("EINVAL")
    values[args[0]] = value
    return OK_PAYLOAD


def _quota_domain(engine: "Engine", domid: int) -> bytes:
    domain = engine.domains.get(domid)
    if domain is None:
        raise XenstoreError("ENOENT")
    usage = engine.tree.accounting.of(domid)
    current = {
        "nodes": usage.nodes,
        "watches": usage.watches,
        "memory": usage.memory,
        "transactions": usage.transactions,
    }
    lines = "".join(
        f"{name:<17}: {current.get(name, 0):>8} (max {domain.hard_quotas.get(name, 0):>8})\n"
        for name in QUOTA_NAMES
    )
    return _text(f"Domain {domid}:\n" + lines)


def _quota_max(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if len(args) > 1 or (args and args[0] != "-r"):
        raise XenstoreError("EINVAL")
    usage = engine.tree.accounting.usage
    priv = engine.config.priv_domid
    guests = [entry for domid, entry in usage.items() if domid != priv]
    peaks = {
        "nodes": max((entry.nodes for entry in guests), default=0),
        "watches": max((entry.watches for entry in guests), default=0),
        "memory": max((entry.memory for entry in guests), default=0),
        "transactions": max((entry.transactions for entry in guests), default=0),
    }
    lines = "".join(f"{name:<17}: {peaks.get(name, 0):>8}\n" for name in QUOTA_NAMES)
    return _text("Max. seen accounting values:\n" + lines)


def _quota(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if not args:
        return _quota_table(engine.config.hard_quotas)
    if args[0] == "set":
        return _quota_set(engine.config.hard_quotas, args[1:])
    if args[0] == "max":
        return _quota_max(engine, args[1:])
    if len(args) != 1:
        raise XenstoreError("EINVAL")
    return _quota_domain(engine, atoi(args[0]))


def _quota_soft(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if not args:
        return _quota_table(engine.config.soft_quotas)
    if args[0] == "set":
        return _quota_set(engine.config.soft_quotas, args[1:])
    raise XenstoreError("EINVAL")


def _live_update(engine: "Engine", args: tuple[str, ...]) -> bytes | None:
    """Answered with a readable string, as C answers every live-update step
    (see ``engine/live_update.py``); None while an update runs."""
    return engine.live_update_request(args)


def _help(engine: "Engine", args: tuple[str, ...]) -> bytes:
    if args:
        raise XenstoreError("EINVAL")
    return _text("".join(f"{name:<15} {synopsis}\n" for name, (_, synopsis) in COMMANDS.items()))


Command = Callable[["Engine", tuple[str, ...]], bytes | None]

#: In C's order, which ``help`` lists.
COMMANDS: dict[str, tuple[Command, str]] = {
    "check": (_check, ""),
    "log": (_log, "[on|off|+<switch>|-<switch>]"),
    "live-update": (
        _live_update,
        "[-c <cmdline>] [-F] [-t <timeout>] [-v <version>] <file>\n"
        "    Default timeout is 60 seconds, default version is 2.",
    ),
    "logfile": (_logfile, "<file>"),
    "memreport": (_memreport, "[<file>]"),
    "print": (_print, "<string>"),
    "quota": (_quota, "[set <name> <val>|<domid>|max [-r]]"),
    "quota-soft": (_quota_soft, "[set <name> <val>]"),
    "help": (_help, ""),
}


def run_control(engine: "Engine", request: Control) -> bytes | None:
    entry = COMMANDS.get(request.command)
    if entry is None:
        raise XenstoreError("EINVAL")
    return entry[0](engine, request.args)
