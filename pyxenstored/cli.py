"""The ``pyxenstored`` command: C xenstored's command line, plus a few of ours.

Options, defaults and error messages follow C xenstored (``tools/xenstored/
core.c``: ``usage``, ``main``, ``set_quota``, ``get_optval_uint``). Values
are applied in command-line order, so ``-E 5 -Q nodes=7`` ends with 7, as in
C. Invalid values end with ``FATAL: <message>`` and exit status 1, like C's
``barf``. As C's ``getopt_long``, unknown options are reported and ignored,
while stray arguments are fatal.

Differences from C:

* ``--socket PATH``: the Unix socket. Without it: ``$XENSTORED_PATH``, else
  ``$XENSTORED_RUNDIR/socket``, else ``/var/run/xenstored/socket``, the
  path libxenstore's clients use. The run dir is created (0755) when the
  socket is in it, as C creates it.
* ``--state-dir DIR`` (default ``$XENSTORED_RUNDIR/pyxenstored`` if that
  variable is set, else ``/run/pyxenstored``: tmpfs, so that the store does
  not outlive a reboot): journal and snapshots; created (mode 0700) if
  missing. Relative file names given to CONTROL ``logfile``/``memreport``
  are placed there (C uses ``/var/lib/xen/xenstore``).
* ``--durability none|write|fsync`` (default ``write``): ``none`` keeps the
  store in memory only, as C does; ``write`` journals every change before
  acknowledging it (survives a crash of the daemon); ``fsync`` also syncs
  it to disk (survives power loss).
* ``--recover=strict|truncate`` (default ``strict``): a damaged journal
  (other than a torn last record) stops the start unless ``truncate``.
* ``-V/--verbose``: debug logging.
* ``-Q path-length=N`` is accepted as ``path-max``: C's usage text documents
  that name, though C itself only matches ``path-max``.
* ``-m`` works as a short option (C lists it in its usage but not in its
  getopt string); ``--priv-domid`` and ``--event`` are long-only, as in C.
* ``-U`` takes over from the running pyxenstored that started this program
  (its live update, server/handover.py), rather than from C's state file.
* Without ``-N`` the daemon detaches as C does, but the starting process
  only exits once the socket is listening (0), or the daemon failed (1).
* Relative ``-T``/``-F`` paths are taken relative to the starting directory.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

from pyxenstored.config import (
    DEFAULT_SOFT_QUOTAS,
    QUOTA_NAMES,
    REL_PATH_MAX,
    Config,
)
from pyxenstored.persist.files import Durability
from pyxenstored.protocol.args import strtoul10
from pyxenstored.server.options import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, DaemonOptions
from pyxenstored.server.trace import DEFAULT_TRACE_SWITCHES, TRACE_SWITCHES

PROG: Final = "pyxenstored"
INT_MAX: Final = 2**31 - 1

#: ``-Q`` names besides config.QUOTA_NAMES, and what they stand for.
QUOTA_ALIASES: Final = {"path-length": "path-max"}

USAGE: Final = f"""\
Usage:

  {PROG} <options>

where options may include:

  -F, --pid-file <file>   giving a file for the daemon's pid to be written,
  -H, --help              to output this message,
  -N, --no-fork           to request that the daemon does not fork,
  -T, --trace-file <file> giving the file for logging, and
      --trace-control=+<switch> activate a specific <switch>
      --trace-control=-<switch> deactivate a specific <switch>
                          (switches: {" ".join(TRACE_SWITCHES)})
  -E, --entry-nb <nb>     limit the number of entries per domain,
  -S, --entry-size <size> limit the size of entry per domain, and
  -W, --watch-nb <nb>     limit the number of watches per domain,
  -t, --transaction <nb>  limit the number of transaction allowed per domain,
  -A, --perm-nb <nb>      limit the number of permissions per node,
  -M, --path-max <chars>  limit the allowed Xenstore node path length,
  -Q, --quota <what>=<nb> set the quota <what> to the value <nb>, allowed
                          quotas are:
                          transaction-nodes: number of accessed node per
                                             transaction
                          memory: total used memory per domain for nodes,
                                  transactions, watches and requests, above
                                  which Xenstore will stop talking to domain
                          nodes: number nodes owned by a domain
                          node-permissions: number of access permissions per
                                            node
                          node-size: total size of a node (permissions +
                                     children names + content)
                          outstanding: number of outstanding requests
                          path-max (or path-length): length of a node path
                          transactions: number of concurrent transactions
                                        per domain
                          watches: number of watches per domain
  -q, --quota-soft <what>=<nb> set a soft quota <what> to the value <nb>,
                          causing a warning to be logged if the
                          limit is violated, allowed quotas are:
                          memory: see above
  -w, --timeout <what>=<seconds>   set the timeout in seconds for <what>,
                          allowed timeout candidates are:
                          watch-event: time a watch-event is kept pending
  -K, --keep-orphans      don't delete nodes owned by a domain when the
                          domain is deleted (this is a security risk!)
  -m, --master-domid      specify the domid of the domain where xenstored
                          is running.  defaults to 0
      --priv-domid <domid> the privileged domain (defaults to the master domid)
      --event <port>      event channel port of the master domain
  -U, --live-update       take over from the pyxenstored that started us
      --socket <path>     the Unix socket (default: $XENSTORED_PATH, else
                          $XENSTORED_RUNDIR/socket, else {DEFAULT_RUN_DIR}/socket)
      --state-dir <dir>   directory for persistent state, created if missing
                          (default: $XENSTORED_RUNDIR/pyxenstored, else
                          {DEFAULT_STATE_DIR})
      --durability <mode> none: memory only (as C); write (default): journal
                          every change before acknowledging it; fsync: also
                          sync it to disk
      --recover <how>     strict (default): refuse to start from a damaged
                          journal; truncate: keep its valid prefix
      --no-transaction-replay  answer every conflicting commit EAGAIN, as C
                          does, instead of replaying the transaction
  -V, --verbose           log debug messages
"""


class UsageError(Exception):
    """A bad command line; C's ``barf`` prints ``FATAL: <message>``."""


def parse_uint(text: str) -> int:
    """C's ``get_optval_uint``: ``strtoul`` base 10, whole string, at most INT_MAX."""
    value, rest = strtoul10(text)
    if not text or rest or value > INT_MAX:
        raise UsageError(f'invalid parameter value "{text}"')
    return value


def parse_quota(arg: str, *, soft: bool) -> tuple[str, int]:
    """``<what>=<nb>`` of ``-Q``/``-q`` → (quota name, value), checked as C does."""
    what, eq, value = arg.partition("=")
    if not eq:
        raise UsageError("quotas must be specified via <what>=<nb>")
    number = parse_uint(value)  # C parses the value before it looks at the name
    if soft:
        if what in DEFAULT_SOFT_QUOTAS:
            return what, number
    else:
        what = QUOTA_ALIASES.get(what, what)
        if what in QUOTA_NAMES:
            return what, number
    raise UsageError(f'unknown quota "{arg}"')


def parse_timeout(arg: str) -> int:
    """``watch-event=<seconds>`` of ``-w``."""
    what, eq, value = arg.partition("=")
    if not eq:
        raise UsageError("quotas must be specified via <what>=<seconds>")
    seconds = parse_uint(value)
    if what != "watch-event":
        raise UsageError(f'unknown timeout "{arg}"')
    return seconds


def parse_trace_switch(arg: str) -> tuple[str, bool]:
    """``+sw``/``-sw`` of ``--trace-control`` → (switch, on)."""
    if arg[:1] in ("+", "-") and arg[1:] in TRACE_SWITCHES:
        return arg[1:], arg[0] == "+"
    raise UsageError(f'Illegal trace switch "{arg}"')


def resolve_run_dir(environ: Mapping[str, str] | None = None) -> str:
    """libxenstore's ``xenstore_daemon_rundir``."""
    env = os.environ if environ is None else environ
    return env.get("XENSTORED_RUNDIR") or DEFAULT_RUN_DIR


def resolve_state_dir(environ: Mapping[str, str] | None = None) -> str:
    """Under ``$XENSTORED_RUNDIR`` when set (tmpfs), else ``/run/pyxenstored``."""
    env = os.environ if environ is None else environ
    run_dir = env.get("XENSTORED_RUNDIR")
    return os.path.join(run_dir, "pyxenstored") if run_dir else DEFAULT_STATE_DIR


def resolve_socket_path(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The socket path as libxenstore finds it (``xenstore_daemon_path``)."""
    if option:
        return option
    env = os.environ if environ is None else environ
    path = env.get("XENSTORED_PATH")
    if path:
        return path
    return os.path.join(resolve_run_dir(env), "socket")


# -- argparse plumbing ------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


_ORDERED_PARSERS: Final[dict[str, Callable[[str], object]]] = {
    "quota": lambda text: parse_quota(text, soft=False),
    "soft": lambda text: parse_quota(text, soft=True),
    "timeout": parse_timeout,
    "trace": parse_trace_switch,
}


class _Ordered(argparse.Action):
    """Records (kind, parsed value) in command-line order in ``namespace.ops``."""

    def __init__(self, *args: Any, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, str)
        # Any other kind is a single hard quota (-E, -S, ...).
        parse = _ORDERED_PARSERS.get(self.kind, parse_uint)
        namespace.ops.append((self.kind, parse(values)))


class _Uint(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, str)
        setattr(namespace, self.dest, parse_uint(values))


#: Short quota options and the quota each sets.
_ONE_QUOTA: Final = (
    ("-E", "--entry-nb", "nodes"),
    ("-S", "--entry-size", "node-size"),
    ("-W", "--watch-nb", "watches"),
    ("-t", "--transaction", "transactions"),
    ("-A", "--perm-nb", "node-permissions"),
    ("-M", "--path-max", "path-max"),
)


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, add_help=False, usage=USAGE)
    add = parser.add_argument
    add("-F", "--pid-file", dest="pid_file")
    add("-H", "--help", dest="help", nargs="?", const=True, default=False)
    add("-N", "--no-fork", dest="no_fork", action="store_true")
    add("-T", "--trace-file", dest="trace_file")
    add("--trace-control", action=_Ordered, kind="trace")
    for short, long, quota in _ONE_QUOTA:
        add(short, long, action=_Ordered, kind=quota)
    add("-Q", "--quota", action=_Ordered, kind="quota")
    add("-q", "--quota-soft", action=_Ordered, kind="soft")
    add("-w", "--timeout", action=_Ordered, kind="timeout")
    add("-K", "--keep-orphans", dest="keep_orphans", action="store_true")
    add("-m", "--master-domid", dest="master_domid", action=_Uint)
    add("--priv-domid", dest="priv_domid", action=_Uint)
    add("--event", dest="event", action=_Uint)
    add("-U", "--live-update", dest="live_update", action="store_true")
    add("-V", "--verbose", dest="verbose", action="store_true")
    add("--socket", dest="socket")
    add("--state-dir", dest="state_dir")
    add("--durability", dest="durability", choices=[d.value for d in Durability])
    add("--recover", dest="recover", choices=["strict", "truncate"], default="strict")
    add("--no-transaction-replay", dest="no_transaction_replay", action="store_true")
    parser.set_defaults(ops=[])
    return parser


def _join_trace_control(argv: Sequence[str]) -> list[str]:
    """``--trace-control -io`` → ``--trace-control=-io`` (getopt takes the next word)."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--trace-control":
            value = next(args, None)
            out.append(arg if value is None else f"{arg}={value}")
        elif arg == "--":
            out.append(arg)
            out.extend(args)
        else:
            out.append(arg)
    return out


def parse_args(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    warn: bool = True,
) -> DaemonOptions | None:
    """The daemon's options, or None when ``-H`` asked for the usage text.

    Raises UsageError for anything C would ``barf`` at.
    """
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    ns, extra = parser.parse_known_args(_join_trace_control(args_in))
    if ns.help is not False:
        return None
    for arg in extra:
        if arg.startswith("-") and arg not in ("-", "--"):
            if warn:
                print(f"{PROG}: unrecognized option '{arg}', ignored", file=sys.stderr)
        else:
            raise UsageError(f"{PROG}: No arguments desired")

    config = Config()
    switches = set(DEFAULT_TRACE_SWITCHES)
    for kind, value in ns.ops:
        if kind == "quota" or kind == "soft":
            name, number = value
            (config.hard_quotas if kind == "quota" else config.soft_quotas)[name] = number
        elif kind == "timeout":
            config.watch_event_timeout = value
        elif kind == "trace":
            name, on = value
            if on:
                switches.add(name)
            else:
                switches.discard(name)
        elif kind == "path-max":
            config.hard_quotas[kind] = min(REL_PATH_MAX, value)
        else:
            config.hard_quotas[kind] = value
    config.keep_orphans = ns.keep_orphans
    if ns.no_transaction_replay:
        config.replay_max_requests = 0
    config.trace_file = None if ns.trace_file is None else os.path.abspath(ns.trace_file)
    config.trace_switches = frozenset(switches)

    # Without Xen to ask (C: the domains with the CONTROL / XENSTORE
    # capabilities) each defaults to the other, then to dom0.
    store_domid = ns.master_domid
    priv_domid = ns.priv_domid
    if store_domid is None:
        store_domid = priv_domid if priv_domid is not None else 0
    if priv_domid is None:
        priv_domid = store_domid
    config.store_domid = store_domid
    config.priv_domid = priv_domid

    def absolute(path: str | None) -> str | None:
        return None if path is None else os.path.abspath(path)
    return DaemonOptions(
        config=config,
        socket_path=os.path.abspath(resolve_socket_path(ns.socket, environ)),
        run_dir=os.path.abspath(resolve_run_dir(environ)),
        state_dir=os.path.abspath(ns.state_dir or resolve_state_dir(environ)),
        pid_file=absolute(ns.pid_file),
        no_fork=ns.no_fork,
        event_port=ns.event,
        live_update=ns.live_update,
        verbose=ns.verbose,
        durability=Durability(ns.durability or Durability.WRITE.value),
        recover_truncate=ns.recover == "truncate",
    )


def setup_logging(options: DaemonOptions) -> None:
    """stderr (and syslog when detaching, as C); DEBUG with ``-V``."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if options.verbose else logging.INFO)
    stderr = logging.StreamHandler()
    stderr.setFormatter(
        logging.Formatter("%(asctime)s " + PROG + "[%(process)d] %(levelname)s %(message)s")
    )
    root.addHandler(stderr)
    if not options.no_fork and os.path.exists("/dev/log"):
        try:
            syslog = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            return
        syslog.setFormatter(logging.Formatter(PROG + "[%(process)d]: %(message)s"))
        root.addHandler(syslog)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyxenstored`` console script."""
    try:
        options = parse_args(argv)
    except UsageError as exc:
        print(f"FATAL: {exc}", file=sys.stderr)
        return 1
    if options is None:
        print(USAGE, file=sys.stderr, end="")
        return 0
    setup_logging(options)

    from pyxenstored.server.runner import run

    return run(options)


if __name__ == "__main__":
    raise SystemExit(main())
