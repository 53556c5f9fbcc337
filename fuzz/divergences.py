"""Known, deliberate divergences between pyxenstored and the reference
daemons, filtered BY NAME. Each entry cites its row in docs/compatibility.md.

A predicate sees the step and both normalised results; it should be as
narrow as the documented difference (the op, the exact replies), never a
whole category. ``stateless`` says the daemons' states stay equal after it,
so a differential run may go on; otherwise the run stops at that step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyxenstored.protocol.args import parse_domid
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.ops import Op
from pyxenstored.store.paths import canonicalize

if TYPE_CHECKING:
    from fuzz.differential import Step

Packets = tuple[tuple[int, bytes], ...]
#: (packets on the request's connection, watch events on the other connection)
Result = tuple[Packets, Packets]
ERROR = int(Op.ERROR)


@dataclass(frozen=True)
class Known:
    name: str
    doc: str
    why: str
    stateless: bool
    match: Callable[[Any, Result, Result], bool]


def _reply(result: Result) -> tuple[int, bytes] | None:
    return result[0][-1] if result[0] else None


def _err(result: Result, name: str) -> bool:
    return _reply(result) == (ERROR, name.encode() + b"\0")


def _args(step: Step) -> list[bytes]:
    return step.payload.split(b"\0")


def _same_events(ref: Result, py: Result) -> bool:
    return ref[0][:-1] == py[0][:-1] and ref[1] == py[1]


def _quota_ops(step: Step, ref: Result, py: Result) -> bool:
    return step.op in (Op.GET_QUOTA, Op.SET_QUOTA) and _err(ref, "ENOSYS") and _same_events(ref, py)


def _control_cmd(step: Step) -> bytes | None:
    return _args(step)[0] if step.op == Op.CONTROL and b"\0" in step.payload else None


def _control_text(commands: tuple[bytes, ...]) -> Callable[[Any, Result, Result], bool]:
    def match(step: Step, ref: Result, py: Result) -> bool:
        return _control_cmd(step) in commands and _same_events(ref, py)

    return match


def _feature_ops(step: Step, ref: Result, py: Result) -> bool:
    return (step.op in (Op.GET_FEATURE, Op.SET_FEATURE) and _err(ref, "ENOSYS")
            and _same_events(ref, py))


def _watch_three_args(step: Step, ref: Result, py: Result) -> bool:
    # C 4.17 has no WATCHDEPTH: exactly 2 strings, so a third (a depth, or an
    # empty string from an extra NUL) is EINVAL; 4.22 and pyxenstored take it.
    strings = step.payload.count(b"\0")
    return step.op == Op.WATCH and strings == 3 and _err(ref, "EINVAL")


def _valid_path(raw: bytes) -> bool:
    try:
        canonicalize(raw.decode("latin-1"), 0, allow_special=True)
    except XenstoreError:
        return False
    return True


def _unwatch_invalid_path(step: Step, ref: Result, py: Result) -> bool:
    # C 4.17's UNWATCH canonicalises without validating, so an invalid path
    # is simply "not watched" (ENOENT); pyxenstored validates it (EINVAL).
    return (step.op == Op.UNWATCH and not _valid_path(_args(step)[0])
            and _err(ref, "ENOENT") and _err(py, "EINVAL"))


_DOMID_OPS = {Op.GET_DOMAIN_PATH: 1, Op.INTRODUCE: 1, Op.RELEASE: 1, Op.RESUME: 1,
              Op.IS_DOMAIN_INTRODUCED: 1,
              Op.SET_TARGET: 2}


def _domid_atoi(step: Step, ref: Result, py: Result) -> bool:
    # C 4.17 reads these domids with atoi into a 16-bit domid ("-1", "x",
    # "0x5", "65536" become 65535, 0, 0, 0); 4.22 and pyxenstored use the
    # strict parse_domid (spec 1.2), so pyxenstored says EINVAL.
    count = _DOMID_OPS.get(step.op)
    if count is None or not _err(py, "EINVAL") or _reply(ref) is None:
        return False
    if step.payload.count(b"\0") < count:
        return False
    for a in _args(step)[:count]:
        try:
            parse_domid(a.decode("latin-1"))
        except XenstoreError:
            return True
    return False


def _path_arg(step: Step) -> str:
    return _args(step)[0].decode("latin-1")


def _abs_path_max(step: Step, ref: Result, py: Result) -> bool:
    # C 4.17 applies path-max (2048, after stripping /local/domain/<N>/) to
    # dom0's socket too; 4.22 and pyxenstored limit only unprivileged domains
    # (spec 2: "Privileged callers and sockets are limited only by the 4096
    # payload").
    if step.op not in (Op.READ, Op.WRITE, Op.MKDIR, Op.RM, Op.DIRECTORY, Op.GET_PERMS,
                       Op.SET_PERMS, Op.WATCH, Op.DIRECTORY_PART, Op.UNWATCH):
        return False
    path = _path_arg(step)
    full = path if path.startswith("/") else "/local/domain/0/" + path
    if full.startswith("/local/domain/"):
        rest = full[len("/local/domain/"):]
        head, _, tail = rest.partition("/")
        if head.isdigit() and tail:
            full = tail
    return len(full) > 2048 and _err(ref, "EINVAL") and not _err(py, "EINVAL")


def _control_text_reply(commands: tuple[bytes, ...]) -> Callable[[Any, Result, Result], bool]:
    # Both answer the command with text (CONTROL replies), worded differently.
    def match(step: Step, ref: Result, py: Result) -> bool:
        a, b = _reply(ref), _reply(py)
        return (_control_cmd(step) in commands and a is not None and b is not None
                and a[0] == Op.CONTROL and b[0] == Op.CONTROL and _same_events(ref, py))

    return match


def _control_log_switch(step: Step, ref: Result, py: Result) -> bool:
    # `log +sw` / `-sw` are upstream (spec 1.6); 4.17 knows only on/off: EINVAL.
    args = step.payload.split(b"\0")[:-1]
    return (step.op == Op.CONTROL and len(args) >= 2 and args[0] == b"log"
            and args[1][:1] in (b"+", b"-") and _err(ref, "EINVAL")
            and _reply(py) == (Op.CONTROL, b"OK\0"))


def _perm_domid_truncation(step: Step, ref: Result, py: Result) -> bool:
    # 4.17 stores a permission's domid in 16 bits, so n65536 is dom0 and
    # exists; upstream and pyxenstored keep the number: no such domain, ENOENT.
    if step.op != Op.SET_PERMS or _reply(ref) != (Op.SET_PERMS, b"OK\0"):
        return False
    if not _err(py, "ENOENT"):
        return False
    for perm in _args(step)[1:]:
        try:
            if int(perm[1:].decode("latin-1"), 0) > 0xFFFF:
                return True
        except ValueError:
            continue
    return False


def _both_errors(op: int) -> Callable[[Any, Result, Result], bool]:
    def match(step: Step, ref: Result, py: Result) -> bool:
        a, b = _reply(ref), _reply(py)
        return (step.op == op and a is not None and b is not None and a[0] == ERROR
                and b[0] == ERROR and _same_events(ref, py))

    return match


def _domid_any_owner(step: Step, ref: Result, py: Result) -> bool:
    # 4.17 has no DOMID_ANY (32757, new in 4.22): as an owner it is a domain
    # that does not exist (ENOENT); upstream and pyxenstored accept it.
    if step.op != Op.SET_PERMS or not _err(ref, "ENOENT"):
        return False
    perms = _args(step)[1:]
    return bool(perms) and perms[0][1:].lower() in (b"32757", b"0x7ff5", b"077765")


def _special_perms(step: Step, ref: Result, py: Result) -> bool:
    # C 4.17 answers EINVAL to GET_PERMS/SET_PERMS on any '@' path; 4.22 and
    # pyxenstored keep @introduceDomain/@releaseDomain as real nodes with
    # permissions (spec 2, 3.7) and answer ENOENT for other '@' names.
    return (step.op in (Op.GET_PERMS, Op.SET_PERMS) and _path_arg(step).startswith("@")
            and _err(ref, "EINVAL") and not _err(py, "EINVAL"))


def _control_log_list(step: Step, ref: Result, py: Result) -> bool:
    # `log` with no switch lists the switches in 4.22 (spec 1.6); 4.17: EINVAL.
    args = [a for a in step.payload.split(b"\0")[:-1]] if step.payload.endswith(b"\0") else \
        step.payload.split(b"\0")[:-1]
    return (step.op == Op.CONTROL and args == [b"log"] and _err(ref, "EINVAL")
            and _reply(py) is not None and _reply(py)[0] == Op.CONTROL)  # type: ignore[index]


KNOWN: tuple[Known, ...] = (
    Known(
        "quota-ops-enosys-4.17",
        "compatibility.md, 'Debian's 4.17 binaries': GET_QUOTA / SET_QUOTA",
        "GET_QUOTA/SET_QUOTA were added in 4.22; 4.17 answers ENOSYS",
        # SET_QUOTA changes pyxenstored's quotas, which only bind unprivileged
        # domains; the differential runs act as dom0 only.
        True,
        _quota_ops,
    ),
    Known(
        "feature-ops-enosys-4.17",
        "compatibility.md, 'Debian's 4.17 binaries': GET_FEATURE / SET_FEATURE",
        "GET_FEATURE/SET_FEATURE are newer than 4.17, which answers ENOSYS",
        True,
        _feature_ops,
    ),
    Known(
        "watch-depth-4.17",
        "compatibility.md, 'Ring features' (4.17 advertises none, so no WATCHDEPTH)",
        "4.17's WATCH takes exactly 2 strings; a third (depth) is EINVAL",
        False,
        _watch_three_args,
    ),
    Known(
        "unwatch-invalid-path-4.17",
        "compatibility.md, 'Debian's 4.17 binaries'",
        "4.17 does not validate UNWATCH's path: ENOENT instead of EINVAL",
        True,
        _unwatch_invalid_path,
    ),
    Known(
        "domid-atoi-4.17",
        "compatibility.md, 'Debian's 4.17 binaries'",
        "4.17 parses INTRODUCE/RELEASE/RESUME/IS_DOMAIN_INTRODUCED/SET_TARGET domids with "
        "atoi; upstream and pyxenstored use parse_domid (spec 1.2) and answer EINVAL",
        # C may have acted on domid 0 or 65535 (e.g. re-INTRODUCEd dom0).
        False,
        _domid_atoi,
    ),
    Known(
        "path-max-dom0-4.17",
        "compatibility.md, 'Debian's 4.17 binaries': path length (row to extend: dom0 too)",
        "4.17 applies path-max 2048 to dom0's socket as well; upstream and pyxenstored "
        "limit dom0 only by the 4096-byte payload",
        False,
        _abs_path_max,
    ),
    Known(
        "special-node-perms-4.17",
        "compatibility.md, 'Debian's 4.17 binaries'",
        "4.17 answers EINVAL to GET_PERMS/SET_PERMS on '@' paths",
        False,
        _special_perms,
    ),
    Known(
        "domid-any-owner-4.17",
        "compatibility.md, 'DOMID_ANY from a socket (3.4)' (4.17 predates DOMID_ANY)",
        "SET_PERMS with owner 32757: 4.17 ENOENT, upstream and pyxenstored accept",
        False,
        _domid_any_owner,
    ),
    Known(
        "set-perms-error-order-4.17",
        "compatibility.md, 'Debian's 4.17 binaries'",
        "both refuse; 4.17 checks the permission list (owner existence) before the path, "
        "pyxenstored the path first",
        True,
        _both_errors(Op.SET_PERMS),
    ),
    Known(
        "control-quota-text",
        "compatibility.md, deliberate differences: `quota <domid>` and `quota max` rows "
        "and 'Debian's 4.17 binaries': CONTROL texts",
        "the quota tables are worded and ordered differently (4.17 has no per-domain max)",
        True,
        _control_text_reply((b"quota", b"quota-soft")),
    ),
    Known(
        "control-help-text",
        "compatibility.md, 'Debian's 4.17 binaries': CONTROL texts",
        "`help` lists the commands with different synopses and spacing",
        True,
        _control_text_reply((b"help",)),
    ),
    Known(
        "control-log-switch-4.17",
        "compatibility.md, 'Debian's 4.17 binaries'",
        "CONTROL `log +sw`/`-sw`: upstream toggles a switch; 4.17 knows only on/off (EINVAL)",
        True,
        _control_log_switch,
    ),
    Known(
        "perm-domid-truncation-4.17",
        "compatibility.md, 'Debian's 4.17 binaries'",
        "SET_PERMS entry domid > 65535: 4.17 truncates it to 16 bits, upstream and "
        "pyxenstored look the domain up (ENOENT)",
        False,
        _perm_domid_truncation,
    ),
    Known(
        "control-log-list-4.17",
        "compatibility.md, 'Debian's 4.17 binaries'",
        "CONTROL `log` without arguments lists the switches upstream; 4.17 says EINVAL",
        True,
        _control_log_list,
    ),
)

BY_NAME = {k.name: k for k in KNOWN}

_ONEARG_PATH_OPS = (Op.READ, Op.DIRECTORY, Op.GET_PERMS, Op.MKDIR, Op.RM)


@dataclass(frozen=True)
class Unsafe:
    """A request the reference daemon cannot be given: it crashes or answers
    with leftover state. The differential driver sends it to neither daemon
    and counts it under ``name``; the codec and live fuzzers still cover it."""

    name: str
    against: tuple[str, ...]
    why: str
    match: Callable[[Any], bool]


def _bad_onearg_path(step: Step) -> bool:
    p = step.payload
    return step.op in _ONEARG_PATH_OPS and (p.count(b"\0") != 1 or not p.endswith(b"\0"))


UNSAFE: tuple[Unsafe, ...] = (
    Unsafe(
        "ocaml-oversize-desync",
        ("ocaml",),
        "spec 1.1: oxenstored clamps a header length over 4096 and the stream "
        "desynchronises, so no reply comes; C and pyxenstored close the connection",
        lambda step: step.op == -1,
    ),
    Unsafe(
        "c417-onearg-errno0-abort",
        ("c",),
        "XSA-481 (spec 10): Debian's C 4.17 turns a malformed one-argument path payload "
        "(no NUL, or several) into a NULL name without setting errno; the reply is a stale "
        "errno, or none at all and xenstored aborts (consider_message: "
        "Assertion `conn->in == NULL' failed). pyxenstored answers EINVAL (spec 1.2).",
        _bad_onearg_path,
    ),
)


def unsafe(step: Step, against: str) -> Unsafe | None:
    for entry in UNSAFE:
        if against in entry.against and entry.match(step):
            return entry
    return None


def classify(step: Step, ref: Result, py: Result) -> Known | None:
    for known in KNOWN:
        if known.match(step, ref, py):
            return known
    return None
