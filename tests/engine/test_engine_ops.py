"""Per-op success and error cases against the standard ``World`` (spec 1.3-1.6, 3).

Every row is ``(who, op, args, expected)``; its id starts with the spec
section it checks. ``expected`` is the success payload (bytes) or an
error name (str).
"""

import pytest
from engine_harness import World

from pyxenstored.protocol.ops import Op

OK = b"OK\0"


def row(spec: str, name: str, who: str, op: int, args: tuple, expected: bytes | str):
    return pytest.param(who, op, args, expected, id=f"{spec}:{name}")


OP_ROWS = [
    # ------------------------------------------------------------------ READ
    row("1.5", "read-dom0", "dom0", Op.READ, ("/pub",), b"p"),
    row("1.5", "read-guest-readable", "g5", Op.READ, ("/pub",), b"p"),
    row("1.5", "read-raw-no-nul-added", "dom0", Op.READ, ("/local/domain/6",), b""),
    row("1.5", "read-missing-dom0", "dom0", Op.READ, ("/nope",), "ENOENT"),
    row("3.2", "read-guest-forbidden", "g5", Op.READ, ("/priv",), "EACCES"),
    row("3.2", "read-guest-acl-entry", "g5", Op.READ, ("/priv/child",), b"c"),
    row("3.2", "read-acl-first-match-wins", "g5", Op.READ, ("/acl",), "EACCES"),
    row("3.2", "read-other-guest-no-acl", "g6", Op.READ, ("/priv/child",), "EACCES"),
    row("3.2", "read-owner", "g5", Op.READ, ("/local/domain/5/data",), b"d"),
    row("2", "read-relative", "g5", Op.READ, ("data",), b"d"),
    row("2", "read-relative-other-guest", "g6", Op.READ, ("data",), "ENOENT"),
    row("2", "read-relative-socket", "dom0", Op.READ, ("data",), "ENOENT"),
    row("1.4", "read-missing-under-unreadable", "g5", Op.READ, ("/priv/x",), "EACCES"),
    row("1.4", "read-missing-deep-under-unreadable", "g5", Op.READ, ("/priv/x/y",), "EACCES"),
    row("1.4", "read-missing-under-readable", "g5", Op.READ, ("/pub/x",), "ENOENT"),
    row("1.4", "read-missing-deep-under-readable", "g5", Op.READ, ("/pub/x/y/z",), "ENOENT"),
    row("2", "read-special-path", "dom0", Op.READ, ("@introduceDomain",), "EINVAL"),
    row("10", "read-root-guest-xsa353", "g5", Op.READ, ("/",), "EACCES"),
    # ----------------------------------------------------------------- WRITE
    row("1.5", "write-dom0-new", "dom0", Op.WRITE, ("/new/a/b", b"v"), OK),
    row("1.5", "write-dom0-existing", "dom0", Op.WRITE, ("/pub", b"q"), OK),
    row("1.5", "write-binary-value", "dom0", Op.WRITE, ("/bin", b"\0\x01\xff"), OK),
    row("1.5", "write-guest-own", "g5", Op.WRITE, ("data/x/y", b"v"), OK),
    row("1.5", "write-guest-world-writable", "g5", Op.WRITE, ("/pub/open", b"v"), OK),
    row("1.5", "write-guest-create-under-writable", "g5", Op.WRITE, ("/pub/open/n", b"v"), OK),
    row("1.5", "write-guest-readonly", "g5", Op.WRITE, ("/pub", b"v"), "EACCES"),
    row("1.5", "write-guest-create-under-readonly", "g5", Op.WRITE, ("/pub/n", b"v"), "EACCES"),
    row("3.2", "write-guest-acl-w", "g5", Op.WRITE, ("/acl", b"v"), OK),
    row("3.2", "write-guest-acl-r-only", "g5", Op.WRITE, ("/priv/child", b"v"), "EACCES"),
    row("3.2", "write-other-guests-home", "g6", Op.WRITE, ("/local/domain/5/x", b"v"), "EACCES"),
    row("1.4", "write-under-unreadable-missing", "g5", Op.WRITE, ("/priv/a/b", b"v"), "EACCES"),
    row("10", "write-root-guest-xsa353", "g5", Op.WRITE, ("/", b"v"), "EACCES"),
    row("2", "write-special-path", "dom0", Op.WRITE, ("@releaseDomain", b"v"), "EINVAL"),
    # ----------------------------------------------------------------- MKDIR
    row("1.5", "mkdir-new", "dom0", Op.MKDIR, ("/m/n",), OK),
    row("1.5", "mkdir-existing-writable", "g5", Op.MKDIR, ("data",), OK),
    row("1.5", "mkdir-existing-readonly", "g5", Op.MKDIR, ("/pub",), "EACCES"),
    row("1.5", "mkdir-guest-forbidden", "g5", Op.MKDIR, ("/priv/m",), "EACCES"),
    row("10", "mkdir-root-guest-xsa353", "g5", Op.MKDIR, ("/",), "EACCES"),
    row("1.5", "mkdir-root-dom0-exists", "dom0", Op.MKDIR, ("/",), OK),
    # -------------------------------------------------------------------- RM
    row("1.5", "rm-dom0", "dom0", Op.RM, ("/pub",), OK),
    row("1.5", "rm-guest-own", "g5", Op.RM, ("data",), OK),
    row("1.5", "rm-missing-parent-exists", "dom0", Op.RM, ("/pub/nope",), OK),
    row("1.5", "rm-missing-parent-missing", "dom0", Op.RM, ("/nope/nope",), "ENOENT"),
    row("1.5", "rm-guest-readonly", "g5", Op.RM, ("/pub",), "EACCES"),
    row("1.5", "rm-guest-writable-node", "g5", Op.RM, ("/pub/open",), OK),
    row("1.5", "rm-guest-acl-w", "g5", Op.RM, ("/acl",), OK),
    row("1.4", "rm-guest-missing-under-unreadable", "g5", Op.RM, ("/priv/x/y",), "EACCES"),
    row("1.4", "rm-guest-missing-parent-missing-readable", "g5", Op.RM, ("/pub/x/y",), "EACCES"),
    row("1.4", "rm-guest-missing-under-writable", "g5", Op.RM, ("data/x/y",), "ENOENT"),
    row("10", "rm-root-dom0-xsa353", "dom0", Op.RM, ("/",), "EINVAL"),
    row("10", "rm-root-guest-xsa353", "g5", Op.RM, ("/",), "EACCES"),
    # ------------------------------------------------------------- DIRECTORY
    row("1.5", "directory", "dom0", Op.DIRECTORY, ("/pub",), b"open\0"),
    row("1.5", "directory-empty", "dom0", Op.DIRECTORY, ("/pub/open",), b""),
    row("1.5", "directory-creation-order", "dom0", Op.DIRECTORY, ("/local/domain",), b"5\x006\0"),
    row("1.5", "directory-guest-own", "g5", Op.DIRECTORY, ("",), "EINVAL"),
    row("1.5", "directory-guest-home", "g5", Op.DIRECTORY, ("/local/domain/5",), b"data\0"),
    row("1.5", "directory-missing", "dom0", Op.DIRECTORY, ("/nope",), "ENOENT"),
    row("3.2", "directory-guest-forbidden", "g5", Op.DIRECTORY, ("/priv",), "EACCES"),
    row("10", "directory-root-guest-xsa353", "g5", Op.DIRECTORY, ("/",), "EACCES"),
    # ------------------------------------------------------------- GET_PERMS
    row("1.5", "get-perms", "dom0", Op.GET_PERMS, ("/acl",), b"n0\0w5\0r5\0"),
    row("1.5", "get-perms-guest-readable", "g5", Op.GET_PERMS, ("/priv/child",), b"n0\0r5\0"),
    row("1.5", "get-perms-guest-forbidden", "g5", Op.GET_PERMS, ("/priv",), "EACCES"),
    row("1.5", "get-perms-special", "dom0", Op.GET_PERMS, ("@releaseDomain",), b"n0\0r32757\0"),
    row("3.7", "get-perms-special-guest", "g5", Op.GET_PERMS, ("@introduceDomain",), "EACCES"),
    row("3.7", "get-perms-release-guest", "g5", Op.GET_PERMS, ("@releaseDomain",), b"n0\0r32757\0"),
    row("1.5", "get-perms-missing", "dom0", Op.GET_PERMS, ("/nope",), "ENOENT"),
    row("10", "get-perms-root-guest-xsa353", "g5", Op.GET_PERMS, ("/",), "EACCES"),
    # ------------------------------------------------------------- SET_PERMS
    row("1.5", "set-perms-dom0", "dom0", Op.SET_PERMS, ("/pub", "n5", "r0"), OK),
    row("1.5", "set-perms-owner-keeps-owner", "g5", Op.SET_PERMS, ("data", "r5", "b6"), OK),
    row("3.4", "set-perms-guest-owner-change-eperm", "g5", Op.SET_PERMS, ("data", "n6"), "EPERM"),
    row("3.4", "set-perms-guest-not-owner", "g5", Op.SET_PERMS, ("/pub/open", "b0"), "EACCES"),
    row("3.4", "set-perms-acl-w-not-owner", "g5", Op.SET_PERMS, ("/acl", "n0"), "EACCES"),
    row("1.5", "set-perms-no-perms", "dom0", Op.SET_PERMS, ("/pub",), "EINVAL"),
    row("1.5", "set-perms-bad-letter", "dom0", Op.SET_PERMS, ("/pub", "x0"), "EINVAL"),
    row("1.5", "set-perms-no-domid", "dom0", Op.SET_PERMS, ("/pub", "r"), "EINVAL"),
    row("1.5", "set-perms-junk-domid", "dom0", Op.SET_PERMS, ("/pub", "r0z"), "EINVAL"),
    row("1.5", "set-perms-empty", "dom0", Op.SET_PERMS, ("/pub", ""), "EINVAL"),
    row("1.5", "set-perms-hex-domid", "dom0", Op.SET_PERMS, ("/pub", "r0x10"), OK),
    row("1.5", "set-perms-octal-domid", "dom0", Op.SET_PERMS, ("/pub", "n0", "r010"), OK),
    row("3.5", "set-perms-owner-minus-one", "dom0", Op.SET_PERMS, ("/pub", "r-1"), "ENOENT"),
    row("3.5", "set-perms-acl-minus-one-stale", "dom0", Op.SET_PERMS, ("/pub", "n0", "r-1"), OK),
    row("3.5", "set-perms-owner-unknown", "dom0", Op.SET_PERMS, ("/pub", "b99999"), "ENOENT"),
    row("1.5", "set-perms-missing-node", "dom0", Op.SET_PERMS, ("/nope", "n0"), "ENOENT"),
    row("1.5", "set-perms-special", "dom0", Op.SET_PERMS, ("@introduceDomain", "n0", "r5"), OK),
    row("10", "set-perms-root-guest-xsa353", "g5", Op.SET_PERMS, ("/", "n5"), "EACCES"),
    row("10", "set-perms-root-guest-same-owner", "g5", Op.SET_PERMS, ("/", "n0"), "EACCES"),
    # -------------------------------------------------------- GET_DOMAIN_PATH
    row("1.5", "get-domain-path", "dom0", Op.GET_DOMAIN_PATH, ("7",), b"/local/domain/7\0"),
    row("1.5", "get-domain-path-guest", "g5", Op.GET_DOMAIN_PATH, ("5",), b"/local/domain/5\0"),
    row("1.5", "get-domain-path-unknown-ok", "g5", Op.GET_DOMAIN_PATH, ("65535",),
        b"/local/domain/65535\0"),
    row("1.2", "get-domain-path-empty-is-0", "g5", Op.GET_DOMAIN_PATH, ("",), b"/local/domain/0\0"),
    row("1.2", "get-domain-path-junk", "dom0", Op.GET_DOMAIN_PATH, ("5x",), "EINVAL"),
    row("1.2", "get-domain-path-too-big", "dom0", Op.GET_DOMAIN_PATH, ("65536",), "EINVAL"),
    # --------------------------------------------------- IS_DOMAIN_INTRODUCED
    row("1.5", "is-introduced-yes", "dom0", Op.IS_DOMAIN_INTRODUCED, ("5",), b"T\0"),
    row("1.5", "is-introduced-dom0", "dom0", Op.IS_DOMAIN_INTRODUCED, ("0",), b"T\0"),
    row("1.5", "is-introduced-no", "dom0", Op.IS_DOMAIN_INTRODUCED, ("9",), b"F\0"),
    row("1.5", "is-introduced-domid-self", "dom0", Op.IS_DOMAIN_INTRODUCED, ("32752",), b"T\0"),
    row("10", "is-introduced-guest-xsa115", "g5", Op.IS_DOMAIN_INTRODUCED, ("5",), "EACCES"),
    # ------------------------------------------------------ INTRODUCE/RELEASE
    row("1.5", "introduce-new", "dom0", Op.INTRODUCE, ("9", "1", "3"), OK),
    row("1.5", "introduce-again", "dom0", Op.INTRODUCE, ("5", "1", "9"), OK),
    row("1.5", "introduce-extra-args", "dom0", Op.INTRODUCE, ("9", "1", "3", "x"), OK),
    row("1.5", "introduce-port-zero", "dom0", Op.INTRODUCE, ("9", "1", "0"), "EINVAL"),
    # evtchn_port_t is unsigned in C: atoi("-4") wraps and passes ``port <= 0``.
    row("1.5", "introduce-port-negative-wraps", "dom0", Op.INTRODUCE, ("9", "1", "-4"), OK),
    row("1.5", "introduce-port-junk", "dom0", Op.INTRODUCE, ("9", "1", "abc"), "EINVAL"),
    row("1.5", "introduce-bad-domid", "dom0", Op.INTRODUCE, ("9x", "1", "3"), "EINVAL"),
    row("1.5", "introduce-two-args", "dom0", Op.INTRODUCE, ("9", "1"), "EINVAL"),
    row("1.5", "introduce-guest", "g5", Op.INTRODUCE, ("9", "1", "3"), "EACCES"),
    row("1.5", "release", "dom0", Op.RELEASE, ("6",), OK),
    row("1.5", "release-dom0", "dom0", Op.RELEASE, ("0",), "EINVAL"),
    row("1.5", "release-unknown", "dom0", Op.RELEASE, ("9",), "ENOENT"),
    row("1.5", "release-guest", "g5", Op.RELEASE, ("6",), "EACCES"),
    row("1.5", "resume", "dom0", Op.RESUME, ("5",), OK),
    row("1.5", "resume-dom0", "dom0", Op.RESUME, ("0",), "EINVAL"),
    row("1.5", "resume-unknown", "dom0", Op.RESUME, ("9",), "ENOENT"),
    row("1.5", "resume-guest", "g5", Op.RESUME, ("5",), "EACCES"),
    # ------------------------------------------------------------- SET_TARGET
    row("1.5", "set-target", "dom0", Op.SET_TARGET, ("6", "5"), OK),
    row("1.5", "set-target-unknown-domain", "dom0", Op.SET_TARGET, ("9", "5"), "ENOENT"),
    row("1.5", "set-target-unknown-target", "dom0", Op.SET_TARGET, ("6", "9"), "ENOENT"),
    row("1.5", "set-target-no-connection", "dom0", Op.SET_TARGET, ("0", "5"), "EINVAL"),
    row("1.5", "set-target-one-arg", "dom0", Op.SET_TARGET, ("6",), "EINVAL"),
    row("1.5", "set-target-guest", "g6", Op.SET_TARGET, ("6", "5"), "EACCES"),
    # ------------------------------------------------------- GET/SET_FEATURE
    row("1.5", "get-feature-own-socket", "dom0", Op.GET_FEATURE, (), b"14\0"),
    row("1.5", "get-feature-own-guest", "g5", Op.GET_FEATURE, (), b"14\0"),
    row("1.5", "get-feature-domain", "dom0", Op.GET_FEATURE, ("5",), b"14\0"),
    row("1.5", "get-feature-unintroduced", "dom0", Op.GET_FEATURE, ("9",), b"14\0"),
    row("1.5", "get-feature-reserved-domid", "dom0", Op.GET_FEATURE, ("32752",), "ENOENT"),
    row("1.5", "get-feature-two-args", "dom0", Op.GET_FEATURE, ("5", "6"), "EINVAL"),
    row("1.5", "get-feature-guest-domid", "g5", Op.GET_FEATURE, ("5",), "EACCES"),
    row("1.5", "set-feature-before-introduce", "dom0", Op.SET_FEATURE, ("9", "2"), OK),
    row("1.5", "set-feature-introduced", "dom0", Op.SET_FEATURE, ("5", "2"), "EBUSY"),
    row("1.5", "set-feature-unsupported-bit", "dom0", Op.SET_FEATURE, ("9", "1"), "EINVAL"),
    row("1.5", "set-feature-unknown-domain", "dom0", Op.SET_FEATURE, ("32753", "2"), "ENOENT"),
    row("1.5", "set-feature-one-arg", "dom0", Op.SET_FEATURE, ("9",), "EINVAL"),
    row("1.5", "set-feature-three-args", "dom0", Op.SET_FEATURE, ("9", "2", "2"), "EINVAL"),
    row("1.5", "set-feature-guest", "g5", Op.SET_FEATURE, ("9", "2"), "EACCES"),
    # --------------------------------------------------------- GET/SET_QUOTA
    row("1.5", "get-quota-names", "dom0", Op.GET_QUOTA, (),
        b"nodes watches outstanding memory soft-memory transactions transaction-nodes "
        b"node-permissions path-max node-size\0"),
    row("6.1", "get-quota-global", "dom0", Op.GET_QUOTA, ("nodes",), b"1000\0"),
    row("6.1", "get-quota-soft-memory", "dom0", Op.GET_QUOTA, ("soft-memory",), b"2097152\0"),
    row("6.1", "get-quota-domain", "dom0", Op.GET_QUOTA, ("5", "watches"), b"128\0"),
    row("6.1", "get-quota-unknown-name", "dom0", Op.GET_QUOTA, ("bogus",), "EINVAL"),
    row("6.1", "get-quota-doc-name-permissions", "dom0", Op.GET_QUOTA, ("permissions",), "EINVAL"),
    row("6.1", "get-quota-disabled-soft", "dom0", Op.GET_QUOTA, ("soft-nodes",), "EINVAL"),
    row("6.1", "get-quota-three-args", "dom0", Op.GET_QUOTA, ("5", "nodes", "x"), "EINVAL"),
    row("6.1", "get-quota-bad-domid", "dom0", Op.GET_QUOTA, ("x", "nodes"), "EINVAL"),
    row("6.1", "get-quota-unknown-domain", "dom0", Op.GET_QUOTA, ("32760", "nodes"), "ENOENT"),
    row("6.1", "get-quota-guest", "g5", Op.GET_QUOTA, (), "EACCES"),
    row("6.1", "set-quota-global", "dom0", Op.SET_QUOTA, ("nodes", "50"), OK),
    row("6.1", "set-quota-domain", "dom0", Op.SET_QUOTA, ("5", "nodes", "50"), OK),
    row("6.1", "set-quota-soft", "dom0", Op.SET_QUOTA, ("5", "soft-memory", "50"), OK),
    row("6.1", "set-quota-zero-unlimited", "dom0", Op.SET_QUOTA, ("nodes", "0"), OK),
    row("6.1", "set-quota-uint-max", "dom0", Op.SET_QUOTA, ("nodes", "-1"), "EINVAL"),
    row("6.1", "set-quota-unknown-name", "dom0", Op.SET_QUOTA, ("bogus", "1"), "EINVAL"),
    row("6.1", "set-quota-one-arg", "dom0", Op.SET_QUOTA, ("nodes",), "EINVAL"),
    row("6.1", "set-quota-four-args", "dom0", Op.SET_QUOTA, ("5", "nodes", "1", "1"), "EINVAL"),
    row("6.1", "set-quota-unknown-domain", "dom0", Op.SET_QUOTA, ("32760", "nodes", "1"), "ENOENT"),
    row("6.1", "set-quota-guest", "g5", Op.SET_QUOTA, ("nodes", "1"), "EACCES"),
    # --------------------------------------------------------------- CONTROL
    row("1.6", "control-check", "dom0", Op.CONTROL, ("check",), OK),
    row("1.6", "control-check-arg", "dom0", Op.CONTROL, ("check", "x"), "EINVAL"),
    row("1.6", "control-print", "dom0", Op.CONTROL, ("print", "hello"), OK),
    row("1.6", "control-print-no-arg", "dom0", Op.CONTROL, ("print",), "EINVAL"),
    row("1.6", "control-log-on", "dom0", Op.CONTROL, ("log", "on"), OK),
    row("1.6", "control-log-switch", "dom0", Op.CONTROL, ("log", "+acc"), OK),
    row("1.6", "control-log-bad-switch", "dom0", Op.CONTROL, ("log", "+nope"), "EINVAL"),
    row("1.6", "control-logfile", "dom0", Op.CONTROL, ("logfile", "trace.log"), OK),
    row("1.6", "control-memreport-no-file", "dom0", Op.CONTROL, ("memreport",), "EINVAL"),
    row("1.6", "control-memreport-file", "dom0", Op.CONTROL, ("memreport", "/tmp/m"), OK),
    row("1.6", "control-quota-set", "dom0", Op.CONTROL, ("quota", "set", "nodes", "7"), OK),
    row("1.6", "control-quota-set-zero", "dom0", Op.CONTROL, ("quota", "set", "nodes", "0"),
        "EINVAL"),
    row("1.6", "control-quota-set-unknown", "dom0", Op.CONTROL, ("quota", "set", "x", "7"),
        "EINVAL"),
    row("1.6", "control-quota-unknown-domain", "dom0", Op.CONTROL, ("quota", "9"), "ENOENT"),
    row("1.6", "control-quota-soft-set", "dom0", Op.CONTROL, ("quota-soft", "set", "memory", "9"),
        OK),
    row("1.6", "control-quota-soft-bad", "dom0", Op.CONTROL, ("quota-soft", "x"), "EINVAL"),
    row("1.6", "control-unknown", "dom0", Op.CONTROL, ("frobnicate",), "EINVAL"),
    row("1.6", "control-empty", "dom0", Op.CONTROL, (), "EINVAL"),
    row("1.6", "control-guest", "g5", Op.CONTROL, ("check",), "EACCES"),
    row("1.6", "control-guest-unknown", "g5", Op.CONTROL, ("frobnicate",), "EACCES"),
    # ------------------------------------------------------------ unknown types
    row("1.3", "type-watch-event", "dom0", Op.WATCH_EVENT, ("/a", "t"), "ENOSYS"),
    row("1.3", "type-error", "dom0", Op.ERROR, ("EINVAL",), "ENOSYS"),
    row("1.3", "type-restrict", "dom0", Op.RESTRICT, ("5",), "ENOSYS"),
    row("1.3", "type-count", "dom0", 27, (), "ENOSYS"),
    row("1.3", "type-invalid", "dom0", 0xFFFF, (), "ENOSYS"),
    row("1.3", "type-huge", "dom0", 0xFFFFFFFF, (), "ENOSYS"),
    row("1.3", "type-unknown-guest", "g5", 27, (), "ENOSYS"),
    row("1.3", "type-restrict-guest", "g5", Op.RESTRICT, ("5",), "ENOSYS"),
]


@pytest.mark.parametrize(("who", "op", "args", "expected"), OP_ROWS)
def test_op(world: World, who: str, op: int, args: tuple, expected: bytes | str) -> None:
    assert world.outcome(who, op, *args) == expected
    assert world.h.consistent() == []


# ---------------------------------------------------------- effects of success


def test_write_then_read_round_trips_binary(world: World) -> None:
    h = world.h
    h.write_ok(h.dom0, "/bin", b"a\0b\xff")
    assert h.read(h.dom0, "/bin") == b"a\0b\xff"


def test_write_creates_missing_parents_with_empty_values(world: World) -> None:
    """Spec 1.5 WRITE / 2: implicit parents get empty values and inherited perms."""
    h = world.h
    h.write_ok(h.dom0, "/x/y/z", b"v")
    assert h.read(h.dom0, "/x") == b""
    assert h.read(h.dom0, "/x/y") == b""
    assert h.perms(h.dom0, "/x/y") == ["n0"]


def test_mkdir_existing_keeps_value(world: World) -> None:
    h = world.h
    h.ok(h.dom0, Op.MKDIR, "/pub")
    assert h.read(h.dom0, "/pub") == b"p"


def test_rm_deletes_subtree_without_checking_children(world: World) -> None:
    """Spec 1.5 RM: children's own permissions are not checked."""
    h = world.h
    h.write_ok(h.dom0, "/pub/open/locked", b"")
    h.ok(h.dom0, Op.SET_PERMS, "/pub/open/locked", "n0")
    h.ok(world.g5, Op.RM, "/pub/open")
    assert h.err(h.dom0, Op.READ, "/pub/open/locked") == "ENOENT"
    assert h.directory(h.dom0, "/pub") == []


def test_set_perms_hex_domid_is_16(world: World) -> None:
    """Spec 1.5 SET_PERMS: domids are read with strtol base 0."""
    h = world.h
    h.ok(h.dom0, Op.SET_PERMS, "/pub", "r0x10", "w010")
    assert h.perms(h.dom0, "/pub") == ["r16", "w8"]


def test_set_perms_minus_one_is_kept_stale(world: World) -> None:
    """Spec 1.5 / 3.5: an ACL entry for an unknown domain is stored flagged and listed."""
    h = world.h
    h.ok(h.dom0, Op.SET_PERMS, "/pub", "n0", "r-1", "r5")
    assert h.perms(h.dom0, "/pub") == ["n0", "r-1", "r5"]
    assert h.read(world.g5, "/pub") == b"p"


def test_set_perms_guest_node_permissions_quota(world: World) -> None:
    """Spec 6.1 node-permissions: quota 5 allows at most 4 entries (check is >=)."""
    h = world.h
    assert h.set_perms(world.g5, "data", "n5", "r6", "r0", "w6") == "OK"
    assert h.set_perms(world.g5, "data", "n5", "r6", "r0", "w6", "b6") == "ENOSPC"
    # Privileged callers are exempt.
    assert h.set_perms(h.dom0, "/local/domain/5/data", "n5", "r6", "r0", "w6", "b6", "r1") == "OK"


def test_get_domain_path_unprivileged_no_existence_check(world: World) -> None:
    assert world.outcome("g6", Op.GET_DOMAIN_PATH, "1234") == b"/local/domain/1234\0"


def test_is_domain_introduced_after_release(world: World) -> None:
    h = world.h
    h.ok(h.dom0, Op.RELEASE, "6")
    assert h.ok(h.dom0, Op.IS_DOMAIN_INTRODUCED, "6") == b"F\0"
    assert h.err(h.dom0, Op.RELEASE, "6") == "ENOENT"


def test_introduce_fires_introduce_domain_for_privileged_watchers(world: World) -> None:
    """Spec 1.5 INTRODUCE / 5.6: plain and per-domain forms."""
    h = world.h
    h.watch(h.dom0, "@introduceDomain", "plain")
    h.watch(h.dom0, "@introduceDomain", "deep", "1")
    h.watch(h.dom0, "@introduceDomain/9", "nine")
    h.watch(h.dom0, "@introduceDomain/8", "eight")
    h.watch(h.dom0, "@introduceDomain", "zero", "0")
    h.introduce(9)
    assert sorted(h.events(h.dom0)) == sorted(
        [
            ("@introduceDomain", "plain"),
            ("@introduceDomain/9", "deep"),
            ("@introduceDomain/9", "nine"),
        ]
    )
    # A second INTRODUCE only resets the connection: no event.
    h.introduce(9)
    assert h.events(h.dom0) == []


def test_introduce_again_resets_the_connection(world: World) -> None:
    """Spec 1.5 INTRODUCE: re-introduction drops watches, transactions and output."""
    h = world.h
    h.watch(world.g5, "data", "t")
    tx = h.start(world.g5)
    h.introduce(5)
    assert h.err(world.g5, Op.UNWATCH, "data", "t") == "ENOENT"
    assert h.err(world.g5, Op.READ, "data", tx=tx) == "ENOENT"
    assert h.engine.tree.accounting.of(5).watches == 0
    assert h.engine.tree.accounting.of(5).transactions == 0


def test_release_deletes_owned_nodes_and_fires_release_domain(world: World) -> None:
    """Spec 1.5 RELEASE / 3.6 / 5.6."""
    h = world.h
    g6 = world.g6
    h.write_ok(g6, "device/vif/0", b"x")
    h.write_ok(h.dom0, "/shared", b"")
    h.ok(h.dom0, Op.SET_PERMS, "/shared", "n0", "b6", "r5")
    h.ok(h.dom0, Op.SET_PERMS, "/pub/open", "n6")
    h.watch(g6, "@releaseDomain", "self")  # dropped before the release
    h.watch(h.dom0, "/local/domain/6/device", "dev")
    h.watch(h.dom0, "@releaseDomain", "rel")
    h.watch(h.dom0, "@releaseDomain", "rel1", "1")
    h.watch(world.g5, "@releaseDomain/6", "g5-6")
    nodes_before = h.recount(6)
    assert nodes_before == 5  # home, device, device/vif, device/vif/0 and /pub/open
    h.ok(h.dom0, Op.RELEASE, "6")
    events = h.events(h.dom0)
    assert ("@releaseDomain", "rel") in events
    assert ("@releaseDomain/6", "rel1") in events
    assert ("/local/domain/6/device", "dev") in events
    assert h.events(world.g5) == [("@releaseDomain/6", "g5-6")]
    assert h.recount(6) == 0
    assert "/local/domain/6" not in h.engine.tree.nodes
    assert h.err(h.dom0, Op.READ, "/pub/open") == "ENOENT"
    assert h.perms(h.dom0, "/shared") == ["n0", "r5"]
    assert h.engine.tree.accounting.of(6).nodes == 0
    assert h.consistent() == []
    assert g6 not in h.engine.connections


def test_release_then_reintroduce_starts_fresh(world: World) -> None:
    """XSA-322/483: a reused domid has no nodes charged and no stale access."""
    h = world.h
    h.ok(h.dom0, Op.SET_PERMS, "/priv", "n0", "r6")
    h.ok(h.dom0, Op.RELEASE, "6")
    g6 = h.introduce(6)
    assert h.engine.tree.accounting.of(6).nodes == 0
    assert h.err(g6, Op.READ, "/priv") == "EACCES"


def test_release_of_the_roots_owner_keeps_the_root(world: World) -> None:
    """Spec 3.6: dom0 may give ``/`` to a guest; its death hands ``/`` back, never deletes it."""
    h = world.h
    h.ok(h.dom0, Op.SET_PERMS, "/", "r6")
    h.ok(h.dom0, Op.RELEASE, "6")
    assert h.engine.tree.get("/") is not None
    assert h.perms(h.dom0, "/") == ["r0"]
    assert h.consistent() == []


def test_set_target_gives_owner_access(world: World) -> None:
    """Spec 1.5 SET_TARGET / 3.2: the device model acts as its target."""
    h = world.h
    assert h.err(world.g6, Op.READ, "/local/domain/5/data") == "EACCES"
    h.ok(h.dom0, Op.SET_TARGET, "6", "5")
    assert h.read(world.g6, "/local/domain/5/data") == b"d"
    h.write_ok(world.g6, "/local/domain/5/data", b"dm")
    assert h.set_perms(world.g6, "/local/domain/5/data", "n5", "r0") == "OK"
    # ACL entries naming the target match too.
    assert h.read(world.g6, "/priv/child") == b"c"
    # It is not globally privileged.
    assert h.err(world.g6, Op.READ, "/priv") == "EACCES"
    # The target's identity is not taken over for owner changes.
    assert h.set_perms(world.g6, "/local/domain/5/data", "n6") == "EPERM"


def test_get_quota_per_domain_is_independent(world: World) -> None:
    """Spec 6.1: per-domain values start from the globals and are set separately."""
    h = world.h
    h.set_quota(5, "nodes", 42)
    assert h.ok(h.dom0, Op.GET_QUOTA, "5", "nodes") == b"42\0"
    assert h.ok(h.dom0, Op.GET_QUOTA, "6", "nodes") == b"1000\0"
    assert h.ok(h.dom0, Op.GET_QUOTA, "nodes") == b"1000\0"
    h.ok(h.dom0, Op.SET_QUOTA, "nodes", "77")
    assert h.ok(h.dom0, Op.GET_QUOTA, "5", "nodes") == b"42\0"
    # A record made after the change starts from the new global.
    assert h.ok(h.dom0, Op.GET_QUOTA, "9", "nodes") == b"77\0"
    h.set_quota(5, "soft-memory", 1234)
    assert h.ok(h.dom0, Op.GET_QUOTA, "5", "soft-memory") == b"1234\0"


def test_get_feature_reflects_set_feature(world: World) -> None:
    h = world.h
    h.ok(h.dom0, Op.SET_FEATURE, "9", "2")
    assert h.ok(h.dom0, Op.GET_FEATURE, "9") == b"2\0"
    g9 = h.introduce(9)
    assert h.ok(g9, Op.GET_FEATURE) == b"2\0"
    # Without WATCHDEPTH a third WATCH argument is EINVAL (spec 5.1).
    assert h.err(g9, Op.WATCH, "data", "t", "1") == "EINVAL"
    assert h.err(g9, Op.WATCH, "data", "t", "-1") == "EINVAL"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(("help",), b"check", id="1.6:help"),
        pytest.param(("log",), b"obj", id="1.6:log"),
        pytest.param(("quota",), b"nodes", id="1.6:quota"),
        pytest.param(("quota", "5"), b"nodes", id="1.6:quota-domain"),
        pytest.param(("quota", "max"), b"nodes", id="1.6:quota-max"),
        pytest.param(("quota-soft",), b"memory", id="1.6:quota-soft"),
        pytest.param(("live-update", "-s"), b"", id="1.6:live-update-text"),
    ],
)
def test_control_text_replies(world: World, args: tuple[str, ...], needle: bytes) -> None:
    """Spec 1.6: text replies are NUL-terminated text, not ERROR packets."""
    type_, payload = world.run("dom0", Op.CONTROL, args)
    assert type_ == Op.CONTROL
    assert payload.endswith(b"\0") and payload.count(b"\0") == 1
    assert len(payload) > 1
    assert needle in payload


def test_control_help_lists_every_command(world: World) -> None:
    text = world.h.ok(world.dom0, Op.CONTROL, "help").decode()
    names = [line.split()[0] for line in text.splitlines() if line and not line[0].isspace()]
    for command in ("check", "log", "logfile", "memreport", "print", "quota", "quota-soft",
                    "live-update", "help"):
        assert command in names


def test_control_quota_domain_reports_usage(world: World) -> None:
    text = world.h.ok(world.dom0, Op.CONTROL, "quota", "5").decode()
    nodes_line = next(line for line in text.splitlines() if line.startswith("nodes"))
    assert f": {world.h.recount(5):>8} (max" in nodes_line


def test_control_print_and_memreport_become_effects(world: World) -> None:
    from pyxenstored.effects import LogMessage, MemoryReport

    h = world.h
    h.engine.take_effects()
    h.ok(h.dom0, Op.CONTROL, "print", "hello")
    h.ok(h.dom0, Op.CONTROL, "memreport", "/tmp/report")
    effects = h.engine.take_effects()
    assert LogMessage("control: hello") in effects
    assert any(isinstance(e, MemoryReport) and e.path == "/tmp/report" for e in effects)


PRIVILEGED = [
    pytest.param(Op.CONTROL, ("check",), id="1.3:control"),
    pytest.param(Op.INTRODUCE, ("9", "1", "3"), id="1.3:introduce"),
    pytest.param(Op.RELEASE, ("6",), id="1.3:release"),
    pytest.param(Op.IS_DOMAIN_INTRODUCED, ("6",), id="1.3:is-domain-introduced"),
    pytest.param(Op.RESUME, ("6",), id="1.3:resume"),
    pytest.param(Op.SET_TARGET, ("6", "5"), id="1.3:set-target"),
    pytest.param(Op.SET_FEATURE, ("9", "2"), id="1.3:set-feature"),
    pytest.param(Op.GET_QUOTA, ("nodes",), id="1.3:get-quota"),
    pytest.param(Op.SET_QUOTA, ("nodes", "1"), id="1.3:set-quota"),
    pytest.param(Op.GET_FEATURE, ("5",), id="1.3:get-feature-domid"),
    # Privilege is checked before the payload is parsed.
    pytest.param(Op.INTRODUCE, ("junk",), id="1.3:introduce-malformed"),
    pytest.param(Op.SET_QUOTA, (), id="1.3:set-quota-malformed"),
]


@pytest.mark.parametrize(("op", "args"), PRIVILEGED)
def test_privileged_op_from_guest_is_eacces(world: World, op: int, args: tuple) -> None:
    nodes_before = dict(world.h.engine.tree.nodes)
    assert world.outcome("g5", op, *args) == "EACCES"
    assert world.h.engine.tree.nodes == nodes_before
    assert world.h.engine.domains.get(6) is not None


def test_control_live_update_binary_chunk_does_not_crash(world: World) -> None:
    """Spec 1.6: ``live-update -d`` chunks may hold NULs and any byte."""
    type_, payload = world.h.raw(world.dom0, Op.CONTROL, b"live-update\0-d\0" + bytes(range(256)))
    assert type_ in (Op.CONTROL, Op.ERROR)
    assert payload.endswith(b"\0")
    assert world.h.read(world.dom0, "/pub") == b"p"
