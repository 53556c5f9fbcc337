"""Malformed payloads and paths: an error reply, never a crash (spec 1.2, 2, 10).

Each row sends a raw payload from dom0 or guest 5 of the standard ``World``
and expects C's answer; afterwards the tree must still be consistent and
both connections must still work.
"""

import pytest
from engine_harness import World

from pyxenstored.protocol.ops import Op

OK = "OK"


def row(spec: str, name: str, who: str, op: int, payload: bytes, expected: str):
    return pytest.param(who, op, payload, expected, id=f"{spec}:{name}")


# Ops that take exactly one string (C ``onearg``).
ONEARG = [
    (Op.READ, b"/pub"),
    (Op.DIRECTORY, b"/pub"),
    (Op.GET_PERMS, b"/pub"),
    (Op.MKDIR, b"/pub/m"),
    (Op.RM, b"/pub/open"),
    (Op.RELEASE, b"6"),
    (Op.RESUME, b"6"),
    (Op.GET_DOMAIN_PATH, b"6"),
    (Op.IS_DOMAIN_INTRODUCED, b"6"),
]

NUL_ROWS = []
for op, arg in ONEARG:
    name = Op(op).name.lower()
    NUL_ROWS += [
        row("1.2", f"{name}-missing-nul", "dom0", op, arg, "EINVAL"),
        row("1.2", f"{name}-empty", "dom0", op, b"", "EINVAL"),
        row("1.2", f"{name}-extra-nul", "dom0", op, arg + b"\0\0", "EINVAL"),
        row("1.2", f"{name}-two-strings", "dom0", op, arg + b"\0x\0", "EINVAL"),
        row("1.2", f"{name}-embedded-nul", "dom0", op, arg + b"\0x", "EINVAL"),
    ]

NUL_ROWS += [
    # WRITE: everything after the first NUL is the value, NULs included.
    row("1.2", "write-missing-nul", "dom0", Op.WRITE, b"/pub", "EINVAL"),
    row("1.2", "write-empty", "dom0", Op.WRITE, b"", "EINVAL"),
    row("1.2", "write-value-with-nuls", "dom0", Op.WRITE, b"/pub\0a\0b\0", OK),
    row("1.2", "write-empty-path", "dom0", Op.WRITE, b"\0value", "EINVAL"),
    # SET_PERMS: get_strings; bytes after the last NUL are ignored.
    row("1.2", "set-perms-missing-nul", "dom0", Op.SET_PERMS, b"/pub\0n0", "EINVAL"),
    row("1.2", "set-perms-path-only", "dom0", Op.SET_PERMS, b"/pub\0", "EINVAL"),
    row("1.2", "set-perms-no-nul", "dom0", Op.SET_PERMS, b"/pub", "EINVAL"),
    row("1.2", "set-perms-trailing-junk-ignored", "dom0", Op.SET_PERMS, b"/pub\0n0\0r5", OK),
    row("1.2", "set-perms-extra-nul", "dom0", Op.SET_PERMS, b"/pub\0n0\0\0", "EINVAL"),
    # WATCH: 2 strings, or 3 with WATCHDEPTH (dom0 has every feature).
    row("1.2", "watch-missing-nul", "dom0", Op.WATCH, b"/pub\0tok", "EINVAL"),
    row("1.2", "watch-extra-nul-is-depth-0", "dom0", Op.WATCH, b"/pub\0tok\0\0", OK),
    row("1.2", "watch-two-extra-nuls", "dom0", Op.WATCH, b"/pub\0tok\0\0\0", "EINVAL"),
    row("1.2", "watch-empty", "dom0", Op.WATCH, b"", "EINVAL"),
    # UNWATCH: exactly 2 strings.
    row("1.2", "unwatch-missing-nul", "dom0", Op.UNWATCH, b"/pub\0tok", "EINVAL"),
    row("1.2", "unwatch-extra-nul", "dom0", Op.UNWATCH, b"/pub\0tok\0\0", "EINVAL"),
    # TRANSACTION_START and RESET_WATCHES ignore their payload.
    row("1.3", "transaction-start-junk", "dom0", Op.TRANSACTION_START, b"x\0y", "1"),
    row("1.3", "reset-watches-junk", "dom0", Op.RESET_WATCHES, b"\0\0x", OK),
    # INTRODUCE needs >= 3 strings and ignores extras.
    row("1.2", "introduce-missing-nul", "dom0", Op.INTRODUCE, b"9\0001\0003", "EINVAL"),
    row("1.2", "introduce-extra", "dom0", Op.INTRODUCE, b"9\0001\0003\0\0\0", OK),
    # SET_TARGET needs >= 2.
    row("1.2", "set-target-missing-nul", "dom0", Op.SET_TARGET, b"6\0005", "EINVAL"),
    row("1.2", "set-target-extra", "dom0", Op.SET_TARGET, b"6\0005\0\0", OK),
    # DIRECTORY_PART needs exactly 2.
    row("1.2", "directory-part-missing-nul", "dom0", Op.DIRECTORY_PART, b"/pub\0000", "EINVAL"),
    row("1.2", "directory-part-extra", "dom0", Op.DIRECTORY_PART, b"/pub\0000\0\0", "EINVAL"),
    # SET_FEATURE exactly 2.
    row("1.2", "set-feature-missing-nul", "dom0", Op.SET_FEATURE, b"9\0002", "EINVAL"),
    row("1.2", "set-feature-extra", "dom0", Op.SET_FEATURE, b"9\0002\0\0", "EINVAL"),
    # GET_FEATURE: no complete string means "my features".
    row("1.2", "get-feature-missing-nul", "dom0", Op.GET_FEATURE, b"5", "14"),
    row("1.2", "get-feature-extra", "dom0", Op.GET_FEATURE, b"5\0\0", "EINVAL"),
    # GET_QUOTA 0-2, SET_QUOTA 2-3 strings.
    row("1.2", "get-quota-missing-nul", "dom0", Op.GET_QUOTA, b"nodes",
        "nodes watches outstanding memory soft-memory transactions transaction-nodes "
        "node-permissions path-max node-size"),
    row("1.2", "get-quota-extra", "dom0", Op.GET_QUOTA, b"5\0nodes\0\0", "EINVAL"),
    row("1.2", "set-quota-missing-nul", "dom0", Op.SET_QUOTA, b"nodes\0005", "EINVAL"),
    row("1.2", "set-quota-extra", "dom0", Op.SET_QUOTA, b"5\0nodes\0005\0\0", "EINVAL"),
    # CONTROL: at least the command.
    row("1.6", "control-missing-nul", "dom0", Op.CONTROL, b"check", "EINVAL"),
    row("1.6", "control-extra-nul", "dom0", Op.CONTROL, b"check\0\0", "EINVAL"),
    row("1.6", "control-empty-command", "dom0", Op.CONTROL, b"\0", "EINVAL"),
    # Non-ASCII bytes never crash the decoder.
    row("1.2", "read-high-bytes", "dom0", Op.READ, b"/\xff\xfe\0", "EINVAL"),
    row("1.2", "write-high-bytes-guest", "g5", Op.WRITE, b"data/\xc3\xa9\0v", "EINVAL"),
    row("1.2", "watch-binary-token", "g5", Op.WATCH, b"data\0\xff\x01\0", OK),
]


PATHS = [
    # (name, path, dom0 READ, guest READ, guest WRITE)
    ("empty", "", "EINVAL", "EINVAL", "EINVAL"),
    ("trailing-slash", "/a/", "EINVAL", "EINVAL", "EINVAL"),
    ("double-slash", "//", "EINVAL", "EINVAL", "EINVAL"),
    ("inner-double-slash", "/a//b", "EINVAL", "EINVAL", "EINVAL"),
    ("space", "/a b", "EINVAL", "EINVAL", "EINVAL"),
    ("dot", "/a.b", "EINVAL", "EINVAL", "EINVAL"),
    ("special-on-read", "@foo", "EINVAL", "EINVAL", "EINVAL"),
    ("special-real-node", "@releaseDomain", "EINVAL", "EINVAL", "EINVAL"),
    ("xsa481-local-domain-slash", "/local/domain/", "EINVAL", "EINVAL", "EINVAL"),
    ("xsa481-local-domain-x-slash", "/local/domain/x/", "EINVAL", "EINVAL", "EINVAL"),
    ("xsa481-local-domain-5-slash", "/local/domain/5/", "EINVAL", "EINVAL", "EINVAL"),
    # Five digits are a legal domid field for C's sscanf("%5u"): an ordinary miss.
    ("xsa481-local-domain-99999-a", "/local/domain/99999/a", "ENOENT", "EACCES", "EACCES"),
    ("xsa481-rel-trailing-slash", "x/", "EINVAL", "EINVAL", "EINVAL"),
    ("xsa481-rel-double-slash", "a//b", "EINVAL", "EINVAL", "EINVAL"),
    ("root", "/", "", "EACCES", "EACCES"),
    ("xsa481-rel-local-domain", "local/domain/", "EINVAL", "EINVAL", "EINVAL"),
    ("xsa481-rel-99999", "99999/a", "ENOENT", "ENOENT", "OK"),
    ("at-inside-name", "/a@b", "ENOENT", "EACCES", "EACCES"),
    ("tab", "/a\tb", "EINVAL", "EINVAL", "EINVAL"),
    ("newline", "/a\n", "EINVAL", "EINVAL", "EINVAL"),
]

PATH_ROWS = []
for name, path, dom0_read, guest_read, guest_write in PATHS:
    encoded = path.encode()
    PATH_ROWS += [
        row("2", f"{name}-dom0-read", "dom0", Op.READ, encoded + b"\0", dom0_read),
        row("2", f"{name}-guest-read", "g5", Op.READ, encoded + b"\0", guest_read),
        row("2", f"{name}-guest-write", "g5", Op.WRITE, encoded + b"\0v", guest_write),
    ]
# The other path-taking ops reject the same malformed paths.
for op in (Op.DIRECTORY, Op.GET_PERMS, Op.MKDIR, Op.RM):
    for path in ("", "/a/", "/a//b", "/local/domain/", "/local/domain/x/", "x/"):
        PATH_ROWS.append(
            row("10", f"{Op(op).name.lower()}-{path or 'empty'}", "g5", op, path.encode() + b"\0",
                "EINVAL")
        )
for op, tail in (
    (Op.SET_PERMS, b"n5\0"),
    (Op.WATCH, b"tok\0"),
    (Op.UNWATCH, b"tok\0"),
    (Op.DIRECTORY_PART, b"0\0"),
):
    for path in ("", "/a/", "/a//b", "/local/domain/", "/local/domain/x/", "x/"):
        PATH_ROWS.append(
            row("10", f"{Op(op).name.lower()}-{path or 'empty'}", "g5", op,
                path.encode() + b"\0" + tail, "EINVAL")
        )
PATH_ROWS += [
    row("2", "directory-part-special", "dom0", Op.DIRECTORY_PART, b"@releaseDomain\0000\0",
        "EINVAL"),
    row("2", "mkdir-special", "dom0", Op.MKDIR, b"@releaseDomain\0", "EINVAL"),
    row("2", "rm-special", "dom0", Op.RM, b"@releaseDomain\0", "EINVAL"),
    row("2", "directory-special", "dom0", Op.DIRECTORY, b"@releaseDomain\0", "EINVAL"),
]


@pytest.mark.parametrize(("who", "op", "payload", "expected"), NUL_ROWS + PATH_ROWS)
def test_bad_input(world: World, who: str, op: int, payload: bytes, expected: str) -> None:
    h = world.h
    conn = world.conn(who)
    type_, reply = h.raw(conn, op, payload)
    assert reply.rstrip(b"\0").decode("latin-1") == expected
    assert (type_ == Op.ERROR) == (expected.startswith("E") and expected.isupper())
    # Nothing broke: the tree is sound and both connections still answer.
    assert h.consistent() == []
    assert h.read(h.dom0, "/pub/open") in (b"o", b"a\0b\0")
    assert h.read(world.g5, "data") == b"d"


def test_path_near_payload_limit_from_dom0(world: World) -> None:
    """Spec 2: privileged callers are limited only by the 4096-byte payload."""
    h = world.h
    path = "/" + "/".join(["p" * 99] * 40)
    assert len(path) == 4000
    h.write_ok(h.dom0, path, b"v")
    assert h.read(h.dom0, path) == b"v"
    h.ok(h.dom0, Op.RM, "/" + "p" * 99)
    assert h.consistent() == []
