r"""Typed request parsing per op (spec 1.2, 1.3, 1.5; 4.1 TRANSACTION_END; 5.1 WATCH).

The expected values follow C xenstored: ``onearg``/``get_strings``/
``send_directory_part``/``do_write`` (core.c), ``do_introduce``,
``do_set_target``, ``onearg_domain``, ``do_get_feature``, ``do_set_feature``,
``do_get_quota``, ``do_set_quota`` (domain.c), ``do_watch``/``do_unwatch``
(watch.c), ``do_transaction_end`` (transaction.c), ``do_control`` (control.c).
Every table row starts with the spec section it checks.

A NUL followed by a digit is written ``\x00``: ``b"\05"`` would be the octal
escape for byte 5, not NUL + "5".
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.requests import (
    PARSERS,
    Control,
    DirectoryPart,
    DomainRequest,
    GetFeature,
    GetQuota,
    Introduce,
    NoArguments,
    PathRequest,
    SetFeature,
    SetPerms,
    SetQuota,
    SetTarget,
    TransactionEnd,
    Unwatch,
    Watch,
    Write,
    parse_watch,
)

EINVAL = "EINVAL"
U32 = 2**32

PATH_OPS = (Op.READ, Op.DIRECTORY, Op.GET_PERMS, Op.MKDIR, Op.RM)
DOMAIN_OPS = (Op.RELEASE, Op.RESUME, Op.GET_DOMAIN_PATH, Op.IS_DOMAIN_INTRODUCED)


def _path_rows() -> list[tuple]:
    rows: list[tuple] = []
    for op in PATH_OPS:
        rows += [
            ("spec 1.2", op, b"/a\0", PathRequest("/a")),
            ("spec 1.2", op, b"rel/x\0", PathRequest("rel/x")),
            ("spec 1.2", op, b"\0", PathRequest("")),  # path checks come later (spec 2)
            ("spec 1.2", op, b"/\xe9\0", PathRequest("/\xe9")),  # latin-1, no decode error
            ("spec 1.2", op, b"", EINVAL),
            ("spec 1.2", op, b"/a", EINVAL),  # missing NUL
            ("spec 1.2", op, b"/a\0b\0", EINVAL),  # extra string
            ("spec 1.2", op, b"/a\0\0", EINVAL),  # extra NUL
            ("spec 1.2", op, b"\0\0", EINVAL),
            ("spec 1.2", op, b"/a\0b", EINVAL),  # NUL not last
        ]
    return rows


def _domain_rows() -> list[tuple]:
    rows: list[tuple] = []
    for op in DOMAIN_OPS:
        rows += [
            ("spec 1.2", op, b"5\0", DomainRequest(5)),
            ("spec 1.2", op, b"0\0", DomainRequest(0)),
            ("spec 1.2", op, b"65535\0", DomainRequest(65535)),
            ("spec 1.2", op, b"\0", DomainRequest(0)),  # "" parses as domid 0
            ("spec 1.2", op, b" 7\0", DomainRequest(7)),  # strtoul skips space
            ("spec 1.2", op, b"", EINVAL),
            ("spec 1.2", op, b"5", EINVAL),  # missing NUL
            ("spec 1.2", op, b"5\0\0", EINVAL),  # extra NUL
            ("spec 1.2", op, b"5\x006\0", EINVAL),
            ("spec 1.2", op, b"65536\0", EINVAL),
            ("spec 1.2", op, b"1x\0", EINVAL),
            ("spec 1.2", op, b"-1\0", EINVAL),
            ("spec 1.2", op, b"0x10\0", EINVAL),
        ]
    return rows


def _no_argument_rows() -> list[tuple]:
    rows: list[tuple] = []
    for op in (Op.TRANSACTION_START, Op.RESET_WATCHES):
        # spec 1.3: the payload is ignored (clients send "\0" or nothing).
        for payload in (b"", b"\0", b"junk", b"a\0b\0c"):
            rows.append(("spec 1.3", op, payload, NoArguments()))
    return rows


REQUESTS = [
    # (spec, op, payload, expected request or EINVAL)
    *_path_rows(),
    *_domain_rows(),
    *_no_argument_rows(),
    # ---- WRITE: get_strings >= 1; value = everything after the first NUL
    ("spec 1.2", Op.WRITE, b"/a\0", Write("/a", b"")),
    ("spec 1.2", Op.WRITE, b"/a\0v", Write("/a", b"v")),
    ("spec 1.2", Op.WRITE, b"/a\0v\0", Write("/a", b"v\0")),  # value keeps its NUL
    ("spec 1.2", Op.WRITE, b"/a\0v\0w\0", Write("/a", b"v\0w\0")),
    ("spec 1.2", Op.WRITE, b"/a\0\0\0", Write("/a", b"\0\0")),
    ("spec 1.2", Op.WRITE, b"/a\0\xff\x00\x80", Write("/a", b"\xff\x00\x80")),
    ("spec 1.2", Op.WRITE, b"\0", Write("", b"")),
    ("spec 1.2", Op.WRITE, b"/a\0" + b"x" * 4093, Write("/a", b"x" * 4093)),
    ("spec 1.2", Op.WRITE, b"", EINVAL),
    ("spec 1.2", Op.WRITE, b"/a", EINVAL),  # no NUL at all
    # ---- SET_PERMS: >= 2 strings (path + at least one perm)
    ("spec 1.5", Op.SET_PERMS, b"/a\0n0\0", SetPerms("/a", ("n0",))),
    ("spec 1.5", Op.SET_PERMS, b"/a\0n0\0r1\0w0x10\0", SetPerms("/a", ("n0", "r1", "w0x10"))),
    ("spec 1.5", Op.SET_PERMS, b"@releaseDomain\0n0\0", SetPerms("@releaseDomain", ("n0",))),
    ("spec 1.2", Op.SET_PERMS, b"/a\0n0\0tail", SetPerms("/a", ("n0",))),  # tail ignored
    ("spec 1.2", Op.SET_PERMS, b"/a\0\0", SetPerms("/a", ("",))),  # perm syntax: later
    ("spec 1.5", Op.SET_PERMS, b"/a\0", EINVAL),  # no perm
    ("spec 1.2", Op.SET_PERMS, b"/a\0n0", EINVAL),  # perm missing its NUL
    ("spec 1.2", Op.SET_PERMS, b"/a", EINVAL),
    ("spec 1.2", Op.SET_PERMS, b"", EINVAL),
    # ---- UNWATCH: exactly 2
    ("spec 5.1", Op.UNWATCH, b"/a\0tok\0", Unwatch("/a", "tok")),
    ("spec 5.1", Op.UNWATCH, b"/a\0\0", Unwatch("/a", "")),  # empty token
    ("spec 1.2", Op.UNWATCH, b"/a\0tok\0junk", Unwatch("/a", "tok")),
    ("spec 5.1", Op.UNWATCH, b"/a\0tok\x003\0", EINVAL),  # depth not accepted
    ("spec 5.1", Op.UNWATCH, b"/a\0", EINVAL),
    ("spec 1.2", Op.UNWATCH, b"/a\0tok", EINVAL),  # missing NUL
    ("spec 1.2", Op.UNWATCH, b"", EINVAL),
    # ---- TRANSACTION_END: onearg, exactly "T" or "F"
    ("spec 4.1", Op.TRANSACTION_END, b"T\0", TransactionEnd(True)),
    ("spec 4.1", Op.TRANSACTION_END, b"F\0", TransactionEnd(False)),
    ("spec 4.1", Op.TRANSACTION_END, b"T", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"F", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"t\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"f\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"TF\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"True\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"T\0\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"T\0F\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b" T\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"\0", EINVAL),
    ("spec 4.1", Op.TRANSACTION_END, b"", EINVAL),
    # ---- INTRODUCE: >= 3 strings, extras ignored; strict domid; atoi port > 0
    ("spec 1.5", Op.INTRODUCE, b"1\x004711\x005\0", Introduce(1, "4711", 5)),
    ("spec 1.2", Op.INTRODUCE, b"1\0g\x005\0extra\0", Introduce(1, "g", 5)),
    ("spec 1.2", Op.INTRODUCE, b"1\0g\x005\0x\0y\0", Introduce(1, "g", 5)),
    ("spec 1.2", Op.INTRODUCE, b"1\0g\x005\0tail", Introduce(1, "g", 5)),
    ("spec 1.5", Op.INTRODUCE, b"1\0\x005\0", Introduce(1, "", 5)),  # gfn ignored by C
    ("spec 1.2", Op.INTRODUCE, b"1\0g\0 7x\0", Introduce(1, "g", 7)),  # atoi port
    ("spec 1.2", Op.INTRODUCE, b"1\0g\x004294967297\0", Introduce(1, "g", 1)),  # int wrap
    ("spec 1.2", Op.INTRODUCE, b"\0g\x005\0", Introduce(0, "g", 5)),  # "" domid is 0
    ("spec 1.2", Op.INTRODUCE, b"1\0g\0", EINVAL),  # 2 strings
    ("spec 1.2", Op.INTRODUCE, b"1\0g\x005", EINVAL),  # port missing its NUL
    ("spec 1.2", Op.INTRODUCE, b"1\0", EINVAL),
    ("spec 1.2", Op.INTRODUCE, b"", EINVAL),
    ("spec 1.5", Op.INTRODUCE, b"1\0g\x000\0", EINVAL),  # port 0
    ("spec 1.5", Op.INTRODUCE, b"1\0g\0x\0", EINVAL),  # atoi junk -> 0
    ("spec 1.5", Op.INTRODUCE, b"1\0g\0\0", EINVAL),  # "" -> 0
    # C's port is an unsigned evtchn_port_t: only 0 is refused, -1 is 0xffffffff.
    ("spec 1.5", Op.INTRODUCE, b"1\0g\0-1\0", Introduce(1, "g", 0xFFFFFFFF)),
    ("spec 1.5", Op.INTRODUCE, b"1\0g\x004294967296\0", EINVAL),  # wraps to 0
    ("spec 1.2", Op.INTRODUCE, b"65536\0g\x005\0", EINVAL),
    ("spec 1.2", Op.INTRODUCE, b"1x\0g\x005\0", EINVAL),
    ("spec 1.2", Op.INTRODUCE, b"-1\0g\x005\0", EINVAL),
    # ---- SET_TARGET: >= 2 strings, both domids strict
    ("spec 1.2", Op.SET_TARGET, b"1\x002\0", SetTarget(1, 2)),
    ("spec 1.2", Op.SET_TARGET, b"1\x002\x003\0", SetTarget(1, 2)),  # extras ignored
    ("spec 1.2", Op.SET_TARGET, b"1\x002\0tail", SetTarget(1, 2)),
    ("spec 1.2", Op.SET_TARGET, b"\0\0", SetTarget(0, 0)),
    ("spec 1.2", Op.SET_TARGET, b"1\0", EINVAL),
    ("spec 1.2", Op.SET_TARGET, b"1\x002", EINVAL),  # second missing its NUL
    ("spec 1.2", Op.SET_TARGET, b"", EINVAL),
    ("spec 1.2", Op.SET_TARGET, b"x\x002\0", EINVAL),
    ("spec 1.2", Op.SET_TARGET, b"1\x002x\0", EINVAL),
    ("spec 1.2", Op.SET_TARGET, b"70000\x002\0", EINVAL),
    ("spec 1.2", Op.SET_TARGET, b"1\x0065536\0", EINVAL),
    # ---- DIRECTORY_PART: exactly 2 (C counts NULs); atoi offset, unsigned
    ("spec 1.5", Op.DIRECTORY_PART, b"/a\x000\0", DirectoryPart("/a", 0)),
    ("spec 1.5", Op.DIRECTORY_PART, b"/a\x00123\0", DirectoryPart("/a", 123)),
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\0x\0", DirectoryPart("/a", 0)),  # atoi junk
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\0\0", DirectoryPart("/a", 0)),
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\x0012ab\0", DirectoryPart("/a", 12)),
    ("spec 1.5", Op.DIRECTORY_PART, b"/a\0-1\0", DirectoryPart("/a", U32 - 1)),  # unsigned off
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\x005\0tail", DirectoryPart("/a", 5)),
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\0", EINVAL),
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\x005", EINVAL),  # offset missing its NUL
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\x005\x006\0", EINVAL),
    ("spec 1.2", Op.DIRECTORY_PART, b"/a\x005\0\0", EINVAL),  # extra NUL
    ("spec 1.2", Op.DIRECTORY_PART, b"", EINVAL),
    # ---- GET_FEATURE: any count; domid and arity checked by the engine (C: priv first)
    ("spec 1.5", Op.GET_FEATURE, b"", GetFeature(())),
    ("spec 1.5", Op.GET_FEATURE, b"junk", GetFeature(())),  # no NUL: no strings
    ("spec 1.5", Op.GET_FEATURE, b"3\0", GetFeature(("3",))),
    ("spec 1.5", Op.GET_FEATURE, b"3\x004\0", GetFeature(("3", "4"))),
    ("spec 1.5", Op.GET_FEATURE, b"x\0", GetFeature(("x",))),
    # ---- SET_FEATURE: exactly 2; strict domid; atoi value as unsigned
    ("spec 1.5", Op.SET_FEATURE, b"1\x0014\0", SetFeature(1, 14)),
    ("spec 1.2", Op.SET_FEATURE, b"1\0x\0", SetFeature(1, 0)),
    ("spec 1.2", Op.SET_FEATURE, b"1\x0014x\0", SetFeature(1, 14)),
    ("spec 1.2", Op.SET_FEATURE, b"1\0-1\0", SetFeature(1, U32 - 1)),
    ("spec 1.2", Op.SET_FEATURE, b"1\x0014\0tail", SetFeature(1, 14)),
    ("spec 1.5", Op.SET_FEATURE, b"1\0", EINVAL),
    ("spec 1.5", Op.SET_FEATURE, b"1\x0014\x000\0", EINVAL),
    ("spec 1.5", Op.SET_FEATURE, b"1\x0014", EINVAL),
    ("spec 1.5", Op.SET_FEATURE, b"", EINVAL),
    ("spec 1.2", Op.SET_FEATURE, b"1x\x0014\0", EINVAL),
    ("spec 1.2", Op.SET_FEATURE, b"65536\x0014\0", EINVAL),
    # ---- GET_QUOTA: 0-2 strings
    ("spec 1.5", Op.GET_QUOTA, b"", GetQuota(None, None)),
    ("spec 1.5", Op.GET_QUOTA, b"nodes", GetQuota(None, None)),  # no NUL: 0 strings
    ("spec 1.5", Op.GET_QUOTA, b"nodes\0", GetQuota(None, "nodes")),
    ("spec 1.5", Op.GET_QUOTA, b"soft-memory\0", GetQuota(None, "soft-memory")),
    ("spec 1.5", Op.GET_QUOTA, b"3\0nodes\0", GetQuota(3, "nodes")),
    ("spec 1.2", Op.GET_QUOTA, b"3\0nodes\0tail", GetQuota(3, "nodes")),
    ("spec 1.2", Op.GET_QUOTA, b"\0nodes\0", GetQuota(0, "nodes")),
    ("spec 1.5", Op.GET_QUOTA, b"3\0nodes\0x\0", EINVAL),
    ("spec 1.2", Op.GET_QUOTA, b"x\0nodes\0", EINVAL),
    ("spec 1.2", Op.GET_QUOTA, b"65536\0nodes\0", EINVAL),
    # ---- SET_QUOTA: 2-3 strings; atoi value as unsigned
    ("spec 1.5", Op.SET_QUOTA, b"nodes\x00100\0", SetQuota(None, "nodes", 100)),
    ("spec 1.5", Op.SET_QUOTA, b"3\0nodes\x00100\0", SetQuota(3, "nodes", 100)),
    ("spec 1.5", Op.SET_QUOTA, b"nodes\0x\0", SetQuota(None, "nodes", 0)),  # atoi junk
    ("spec 1.5", Op.SET_QUOTA, b"nodes\0-1\0", SetQuota(None, "nodes", U32 - 1)),  # UINT_MAX
    ("spec 1.2", Op.SET_QUOTA, b"nodes\x007\0tail", SetQuota(None, "nodes", 7)),
    ("spec 1.5", Op.SET_QUOTA, b"", EINVAL),
    ("spec 1.5", Op.SET_QUOTA, b"nodes\0", EINVAL),
    ("spec 1.5", Op.SET_QUOTA, b"nodes\x00100", EINVAL),
    ("spec 1.5", Op.SET_QUOTA, b"3\0nodes\x00100\0x\0", EINVAL),
    ("spec 1.2", Op.SET_QUOTA, b"x\0nodes\x00100\0", EINVAL),
    ("spec 1.2", Op.SET_QUOTA, b"99999\0nodes\x00100\0", EINVAL),
    # ---- CONTROL: first string is the command; raw payload kept
    ("spec 1.6", Op.CONTROL, b"check\0", Control("check", (), b"check\0")),
    (
        "spec 1.6",
        Op.CONTROL,
        b"live-update\0-s\0-t\x0060\0",
        Control("live-update", ("-s", "-t", "60"), b"live-update\0-s\0-t\x0060\0"),
    ),
    (
        "spec 1.6",
        Op.CONTROL,
        b"live-update\0-d\x003\0\x00\x01\xff",
        Control("live-update", ("-d", "3", ""), b"live-update\0-d\x003\0\x00\x01\xff"),
    ),
    ("spec 1.6", Op.CONTROL, b"\0", Control("", (), b"\0")),  # unknown command: engine
    ("spec 1.6", Op.CONTROL, b"", EINVAL),
    ("spec 1.6", Op.CONTROL, b"check", EINVAL),  # no NUL
]


def _row_id(row: tuple) -> str:
    spec, op, payload, _ = row
    return f"{spec}-{Op(op).name}-{payload!r}"


@pytest.mark.parametrize(
    ("spec", "op", "payload", "expected"), REQUESTS, ids=[_row_id(row) for row in REQUESTS]
)
def test_parser(spec: str, op: Op, payload: bytes, expected: object) -> None:
    parse = PARSERS[op]
    if expected == EINVAL:
        with pytest.raises(XenstoreError) as info:
            parse(payload)
        assert info.value.name == EINVAL
    else:
        assert parse(payload) == expected


def test_every_parser_has_rows() -> None:
    covered = {op for _, op, _, _ in REQUESTS}
    assert covered == set(PARSERS)


def test_parsers_cover_every_client_op_except_watch() -> None:
    # spec 1.3: WATCH_EVENT/ERROR from a client and the removed RESTRICT are
    # ENOSYS; WATCH's arity depends on the WATCHDEPTH feature (parse_watch).
    not_parsed = {Op.WATCH, Op.WATCH_EVENT, Op.ERROR, Op.RESTRICT}
    assert set(PARSERS) == set(Op) - not_parsed


@pytest.mark.parametrize("op", PATH_OPS + (Op.WRITE,))
@given(path=st.binary(max_size=64).filter(lambda b: b"\0" not in b))
def test_path_bytes_roundtrip(op: Op, path: bytes) -> None:
    # spec 1.2: any NUL-free bytes survive decoding (latin-1) unchanged.
    request = PARSERS[op](path + b"\0")
    assert isinstance(request, PathRequest | Write)
    assert request.path.encode("latin-1") == path


@given(value=st.binary(max_size=4000))
def test_write_value_is_everything_after_first_nul(value: bytes) -> None:
    # spec 1.2: the WRITE value may contain NULs and has no terminator.
    assert PARSERS[Op.WRITE](b"/p\0" + value) == Write("/p", value)


# --------------------------------------------------------------------------
# WATCH (spec 5.1): 2 strings, or 3 only with WATCHDEPTH; depth >= 0
# --------------------------------------------------------------------------

WATCH = [
    # (spec, depth_allowed, payload, expected or EINVAL)
    ("spec 5.1", False, b"/a\0tok\0", Watch("/a", "tok", -1)),
    ("spec 5.1", True, b"/a\0tok\0", Watch("/a", "tok", -1)),  # no depth: unlimited
    ("spec 5.1", False, b"/a\0\0", Watch("/a", "", -1)),  # empty token
    ("spec 5.1", False, b"@introduceDomain\0t\0", Watch("@introduceDomain", "t", -1)),
    ("spec 1.2", False, b"/a\0tok\0tail", Watch("/a", "tok", -1)),  # tail ignored
    ("spec 5.1", False, b"/a\0tok\x003\0", EINVAL),  # 3 args without the feature
    ("spec 5.1", False, b"/a\0tok\0\0", EINVAL),
    ("spec 5.1", False, b"/a\0", EINVAL),
    ("spec 1.2", False, b"/a\0tok", EINVAL),  # token missing its NUL
    ("spec 1.2", False, b"", EINVAL),
    ("spec 5.1", True, b"/a\0tok\x003\0", Watch("/a", "tok", 3)),
    ("spec 5.1", True, b"/a\0tok\x000\0", Watch("/a", "tok", 0)),
    ("spec 5.1", True, b"/a\0tok\0-0\0", Watch("/a", "tok", 0)),
    ("spec 1.2", True, b"/a\0tok\0x\0", Watch("/a", "tok", 0)),  # atoi junk -> 0
    ("spec 1.2", True, b"/a\0tok\0\0", Watch("/a", "tok", 0)),
    ("spec 1.2", True, b"/a\0tok\0 2x\0", Watch("/a", "tok", 2)),
    ("spec 1.2", True, b"/a\0tok\x002147483647\0", Watch("/a", "tok", 2**31 - 1)),
    ("spec 1.2", True, b"/a\0tok\x003\0tail", Watch("/a", "tok", 3)),
    ("spec 5.1", True, b"/a\0tok\0-1\0", EINVAL),  # negative depth
    ("spec 5.1", True, b"/a\0tok\0-5\0", EINVAL),
    ("spec 5.1", True, b"/a\0tok\x002147483648\0", EINVAL),  # atoi: INT_MIN
    ("spec 5.1", True, b"/a\0tok\x004294967295\0", EINVAL),  # atoi: -1
    ("spec 5.1", True, b"/a\0tok\x003\x004\0", EINVAL),  # 4 args
    ("spec 5.1", True, b"/a\0", EINVAL),
    ("spec 1.2", True, b"/a\0tok\x003", Watch("/a", "tok", -1)),  # depth lacks NUL: 2 args
    ("spec 1.2", True, b"", EINVAL),
]


@pytest.mark.parametrize(
    ("spec", "depth_allowed", "payload", "expected"),
    WATCH,
    ids=[f"{r[0]}-{r[1]}-{r[2]!r}" for r in WATCH],
)
def test_parse_watch(spec: str, depth_allowed: bool, payload: bytes, expected: object) -> None:
    if expected == EINVAL:
        with pytest.raises(XenstoreError) as info:
            parse_watch(payload, depth_allowed)
        assert info.value.name == EINVAL
    else:
        assert parse_watch(payload, depth_allowed) == expected


def test_watch_is_not_in_parsers() -> None:
    # spec 5.1: WATCH arity depends on the caller's WATCHDEPTH feature.
    assert Op.WATCH not in PARSERS
