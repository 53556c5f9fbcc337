"""Typed requests: one class per op, parsed with C xenstored's strictness (spec 1.2).

Parsing happens after the engine's privilege and transaction checks, as in
C, so a malformed request from an unprivileged caller still gets EACCES.
Numbers that C reads with ``atoi`` are read the same lenient way here; domids
that C reads with ``parse_domid`` are strict.
"""

from collections.abc import Callable

import attrs

from pyxenstored.protocol.args import atoi, one_arg, parse_domid, strings
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.ops import Op


def _einval() -> XenstoreError:
    return XenstoreError("EINVAL")


@attrs.frozen(slots=True)
class PathRequest:
    """READ, DIRECTORY, GET_PERMS, MKDIR, RM: one path argument."""

    path: str


@attrs.frozen(slots=True)
class DirectoryPart:
    path: str
    offset: int


@attrs.frozen(slots=True)
class Write:
    path: str
    value: bytes


@attrs.frozen(slots=True)
class SetPerms:
    path: str
    perms: tuple[str, ...]


@attrs.frozen(slots=True)
class Watch:
    path: str
    token: str
    #: -1 for unlimited; only sent by clients that saw the WATCHDEPTH feature.
    depth: int


@attrs.frozen(slots=True)
class Unwatch:
    path: str
    token: str


@attrs.frozen(slots=True)
class TransactionEnd:
    commit: bool


@attrs.frozen(slots=True)
class Introduce:
    domid: int
    gfn: str
    port: int


@attrs.frozen(slots=True)
class DomainRequest:
    """RELEASE, RESUME, GET_DOMAIN_PATH, IS_DOMAIN_INTRODUCED: one domid."""

    domid: int


@attrs.frozen(slots=True)
class SetTarget:
    domid: int
    target: int


@attrs.frozen(slots=True)
class GetFeature:
    """The domid is parsed by the engine: C checks privilege before arity."""

    args: tuple[str, ...]


@attrs.frozen(slots=True)
class SetFeature:
    domid: int
    value: int


@attrs.frozen(slots=True)
class GetQuota:
    domid: int | None
    name: str | None


@attrs.frozen(slots=True)
class SetQuota:
    domid: int | None
    name: str
    value: int


@attrs.frozen(slots=True)
class Control:
    command: str
    args: tuple[str, ...]
    #: The raw payload, for ``live-update -d`` whose chunks may hold NULs.
    raw: bytes


@attrs.frozen(slots=True)
class NoArguments:
    """TRANSACTION_START and RESET_WATCHES: the payload is ignored."""


Request = (
    PathRequest
    | DirectoryPart
    | Write
    | SetPerms
    | Watch
    | Unwatch
    | TransactionEnd
    | Introduce
    | DomainRequest
    | SetTarget
    | GetFeature
    | SetFeature
    | GetQuota
    | SetQuota
    | Control
    | NoArguments
)

_NO_ARGUMENTS = NoArguments()


def _path(payload: bytes) -> PathRequest:
    return PathRequest(one_arg(payload))


def _directory_part(payload: bytes) -> DirectoryPart:
    args = strings(payload)
    if len(args) != 2:
        raise _einval()
    # The offset is unsigned in C: a negative one lands past the end.
    return DirectoryPart(args[0], atoi(args[1]) % 2**32)


def _write(payload: bytes) -> Write:
    nul = payload.find(b"\0")
    if nul < 0:
        raise _einval()
    return Write(payload[:nul].decode("latin-1"), payload[nul + 1 :])


def _set_perms(payload: bytes) -> SetPerms:
    args = strings(payload)
    if len(args) < 2:
        raise _einval()
    return SetPerms(args[0], tuple(args[1:]))


def _watch_with_depth(payload: bytes) -> Watch:
    args = strings(payload)
    if len(args) == 3:
        depth = atoi(args[2])
        if depth < 0:
            raise _einval()
        return Watch(args[0], args[1], depth)
    if len(args) != 2:
        raise _einval()
    return Watch(args[0], args[1], -1)


def _watch_without_depth(payload: bytes) -> Watch:
    args = strings(payload)
    if len(args) != 2:
        raise _einval()
    return Watch(args[0], args[1], -1)


def parse_watch(payload: bytes, depth_allowed: bool) -> Watch:
    """WATCH takes a third (depth) argument only with the WATCHDEPTH feature."""
    return _watch_with_depth(payload) if depth_allowed else _watch_without_depth(payload)


def _unwatch(payload: bytes) -> Unwatch:
    args = strings(payload)
    if len(args) != 2:
        raise _einval()
    return Unwatch(args[0], args[1])


def _transaction_end(payload: bytes) -> TransactionEnd:
    arg = one_arg(payload)
    if arg not in ("T", "F"):
        raise _einval()
    return TransactionEnd(arg == "T")


def _introduce(payload: bytes) -> Introduce:
    args = strings(payload)
    if len(args) < 3:
        raise _einval()
    domid = parse_domid(args[0])
    # The port is unsigned in C, so only 0 is refused here.
    port = atoi(args[2]) % 2**32
    if port == 0:
        raise _einval()
    return Introduce(domid, args[1], port)


def _domain(payload: bytes) -> DomainRequest:
    return DomainRequest(parse_domid(one_arg(payload)))


def _set_target(payload: bytes) -> SetTarget:
    args = strings(payload)
    if len(args) < 2:
        raise _einval()
    return SetTarget(parse_domid(args[0]), parse_domid(args[1]))


def _get_feature(payload: bytes) -> GetFeature:
    return GetFeature(tuple(strings(payload)))


def _set_feature(payload: bytes) -> SetFeature:
    args = strings(payload)
    if len(args) != 2:
        raise _einval()
    return SetFeature(parse_domid(args[0]), atoi(args[1]) % 2**32)


def _get_quota(payload: bytes) -> GetQuota:
    args = strings(payload)
    if len(args) == 0:
        return GetQuota(None, None)
    if len(args) == 1:
        return GetQuota(None, args[0])
    if len(args) == 2:
        return GetQuota(parse_domid(args[0]), args[1])
    raise _einval()


def _set_quota(payload: bytes) -> SetQuota:
    args = strings(payload)
    if len(args) == 2:
        return SetQuota(None, args[0], atoi(args[1]) % 2**32)
    if len(args) == 3:
        return SetQuota(parse_domid(args[0]), args[1], atoi(args[2]) % 2**32)
    raise _einval()


def _control(payload: bytes) -> Control:
    args = strings(payload)
    if not args:
        raise _einval()
    return Control(args[0], tuple(args[1:]), payload)


def _no_arguments(payload: bytes) -> NoArguments:
    return _NO_ARGUMENTS


PARSERS: dict[int, Callable[[bytes], Request]] = {
    Op.CONTROL: _control,
    Op.DIRECTORY: _path,
    Op.READ: _path,
    Op.GET_PERMS: _path,
    Op.UNWATCH: _unwatch,
    Op.TRANSACTION_START: _no_arguments,
    Op.TRANSACTION_END: _transaction_end,
    Op.INTRODUCE: _introduce,
    Op.RELEASE: _domain,
    Op.GET_DOMAIN_PATH: _domain,
    Op.WRITE: _write,
    Op.MKDIR: _path,
    Op.RM: _path,
    Op.SET_PERMS: _set_perms,
    Op.IS_DOMAIN_INTRODUCED: _domain,
    Op.RESUME: _domain,
    Op.SET_TARGET: _set_target,
    Op.RESET_WATCHES: _no_arguments,
    Op.DIRECTORY_PART: _directory_part,
    Op.GET_FEATURE: _get_feature,
    Op.SET_FEATURE: _set_feature,
    Op.GET_QUOTA: _get_quota,
    Op.SET_QUOTA: _set_quota,
}
"""Parsers for every op except WATCH, whose arity depends on the caller's features."""
