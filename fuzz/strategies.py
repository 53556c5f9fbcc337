"""Hypothesis strategies for xenstore inputs (spec sections 1, 2, 3, 5, 10).

Two flavours of everything:

* the *wide* strategies (``paths()``, ``packets()``, ``byte_streams()``) cover
  the whole input space, valid and malformed, for the codec and live fuzzers;
* the *narrow* ones (``small=True``) draw names from a handful of
  components so that generated sequences collide on the same nodes, which is
  what the differential runs need to reach interesting states.
"""

from __future__ import annotations

import functools
import string

from hypothesis import strategies as st

from pyxenstored.protocol.ops import INVALID, TYPE_COUNT, Op
from pyxenstored.protocol.wire import PAYLOAD_MAX, Packet

#: Characters C accepts in a path (spec 2).
PATH_CHARS = string.ascii_letters + string.digits + "-/_@"
NAME_CHARS = string.ascii_letters + string.digits + "-_@"
#: Names the narrow strategies draw from: few, so sequences hit the same nodes.
SMALL_NAMES = ("a", "b", "c", "d", "x-1", "y_2")
#: The fuzzers' own subtree; differential runs confine absolute writes to it.
FUZZ_ROOT = "/fz"
DOMID_ANY = 32757
DOMID_SELF = 0x7FF0
SPECIAL_PATHS = (
    "@introduceDomain",
    "@releaseDomain",
    "@introduceDomain/5",
    "@releaseDomain/5",
    "@releaseDomain/0",
    "@foo",
    "@",
)
#: XSA-481 and friends: the `/local/domain/<id>` prefix in odd shapes (spec 10).
XSA481_PATHS = (
    "/local/domain/",
    "/local/domain",
    "/local/domain/x/",
    "/local/domain/x",
    "/local/domain/99999/a",
    "/local/domain/0/",
    "/local/domain/5",
    "/local/domain/5/a",
    "/local/domain/-1/a",
    "/local/domain//a",
    "local/domain/",
    "domain/0/",
)


def names(small: bool = False) -> st.SearchStrategy[str]:
    """One path component."""
    if small:
        return st.sampled_from(SMALL_NAMES)
    return st.text(alphabet=NAME_CHARS, min_size=1, max_size=12)


def abs_paths(small: bool = False, max_depth: int = 5, root: str = "") -> st.SearchStrategy[str]:
    """Valid absolute paths (under ``root`` if given), including ``/`` itself."""
    body = st.lists(names(small), min_size=0 if not root else 0, max_size=max_depth)
    return body.map(lambda parts: (root + "/" + "/".join(parts)).rstrip("/") or "/")


def rel_paths(small: bool = False, max_depth: int = 4) -> st.SearchStrategy[str]:
    """Valid relative paths (``/local/domain/<id>/`` is prefixed by the daemon)."""
    return st.lists(names(small), min_size=1, max_size=max_depth).map("/".join)


def deep_paths() -> st.SearchStrategy[str]:
    """Deep paths of short names, up to the payload limit (XSA-418)."""
    return st.integers(1, (PAYLOAD_MAX - 2) // 2).map(lambda n: "/a" * n)


def long_paths() -> st.SearchStrategy[str]:
    """Paths around every length limit: 2047/2048/2049 (path-max), 3072, 4095."""
    lengths = st.sampled_from([2046, 2047, 2048, 2049, 2050, 3071, 3072, 3073, 4094, 4095])
    relative = st.booleans()

    def build(length: int, rel: bool) -> str:
        text = (("" if rel else "/") + ("n" * 99 + "/") * 50)[:length]
        return text[:-1] + "z" if text.endswith("/") else text

    return st.builds(build, lengths, relative)


def invalid_paths() -> st.SearchStrategy[str]:
    """Paths C refuses with EINVAL (spec 2), plus XSA-481 shapes."""
    bad_char = st.builds(
        lambda a, c, b: f"/{a}{c}{b}",
        names(),
        st.sampled_from(list(" .,:;!\"#$%&'()*+<=>?[\\]^`{|}~\x01\x7f\xe9")),
        names(),
    )
    return st.one_of(
        st.just(""),
        bad_char,
        st.builds(lambda p: p + "/", abs_paths()).filter(lambda p: p != "//"),
        st.builds(lambda a, b: f"/{a}//{b}", names(), names()),
        st.just("//"),
        st.sampled_from(XSA481_PATHS),
        st.sampled_from(SPECIAL_PATHS),
    )


def paths(small: bool = False) -> st.SearchStrategy[str]:
    """Any path: mostly valid, sometimes invalid, special, deep or long."""
    root = FUZZ_ROOT if small else ""
    return st.one_of(
        abs_paths(small, root=root),
        abs_paths(small, root=root),
        rel_paths(small),
        invalid_paths(),
        st.sampled_from(("/", "/tool", "/tool/xenstored", "/local", "/local/domain/0")),
        deep_paths() if not small else st.just(FUZZ_ROOT + "/a/a/a/a/a/a/a/a"),
        long_paths(),
    )


def domids(small: bool = False) -> st.SearchStrategy[str]:
    """Domid arguments: strict-parse edge cases and junk (spec 1.2)."""
    fixed = ["0", "1", "5", "7", "32757", str(DOMID_SELF), "65535", "65536", "", "-1",
             "abc", "5x", " 5", "0x5", "05", "4294967296"]
    if small:
        return st.sampled_from(fixed)
    return st.one_of(st.sampled_from(fixed), st.integers(0, 2**32).map(str),
                     st.text(alphabet=string.printable.replace("\0", ""), max_size=6))


def perm_strings(small: bool = False) -> st.SearchStrategy[str]:
    """One ``<r|w|b|n><domid>`` entry, or a malformed one (spec 3.1, 10)."""
    good = st.builds(lambda p, d: p + d, st.sampled_from("rwbn"),
                     st.sampled_from(["0", "1", "5", "7", str(DOMID_ANY)]))
    bad = st.sampled_from(["x0", "r", "", "r-1", "b99999", "r0x7FF5", "r0x10", "w010",
                           "R0", "rr0", "r 0", "n65535", "n65536", "b4294967296", "r+5"])
    if small:
        return st.one_of(good, good, bad)
    return st.one_of(good, bad, st.text(alphabet="rwbnx0123456789-+ ", max_size=8))


def perm_lists(small: bool = False) -> st.SearchStrategy[list[str]]:
    return st.lists(perm_strings(small), min_size=0, max_size=5)


def values(small: bool = False) -> st.SearchStrategy[bytes]:
    """Node values: arbitrary binary, NULs included."""
    if small:
        return st.one_of(st.sampled_from([b"", b"v", b"\0", b"a\0b", b"\xff" * 3]),
                         st.binary(max_size=40))
    return st.one_of(st.binary(max_size=64), st.binary(min_size=3000, max_size=PAYLOAD_MAX))


def tokens(small: bool = False) -> st.SearchStrategy[str]:
    """Watch tokens: any NUL-free string, empty included."""
    if small:
        return st.sampled_from(["t", "u", "", "tok-1"])
    return st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\0"),
                   max_size=40)


def _latin(text: str) -> bytes:
    return text.encode("latin-1", "replace")


def nul_args(*args: str | bytes) -> bytes:
    return b"".join((a if isinstance(a, bytes) else _latin(a)) + b"\0" for a in args)


@functools.cache
def mangle(payload: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A payload as generated, or with its NUL rules broken: the terminator
    missing, an extra NUL, trailing junk, or nothing at all (spec 1.2)."""
    return st.one_of(
        payload,
        payload,
        payload,
        payload.map(lambda p: p[:-1] if p.endswith(b"\0") else p),
        payload.map(lambda p: p + b"\0"),
        payload.map(lambda p: p + b"junk"),
        payload.map(lambda p: b"\0" + p),
        st.just(b""),
    )


CONTROL_COMMANDS = ("check", "log", "print", "quota", "quota-soft", "help", "bogus", "")


def control_payloads(small: bool = False) -> st.SearchStrategy[bytes]:
    """CONTROL commands that change no files and start no live update."""
    args = st.lists(st.sampled_from(["", "x", "0", "5", "max", "set", "nodes", "10", "-r",
                                     "+io", "-io"]), max_size=3)
    return st.builds(lambda c, a: nul_args(c, *a), st.sampled_from(CONTROL_COMMANDS), args)


@functools.cache
def op_payloads(op: int, small: bool = False) -> st.SearchStrategy[bytes]:
    """A well-formed-looking payload for message type ``op`` (spec 1.3)."""
    p, d = paths(small), domids(small)
    if op == Op.CONTROL:
        return control_payloads(small)
    if op in (Op.DIRECTORY, Op.READ, Op.MKDIR, Op.RM, Op.GET_PERMS):
        path = st.one_of(p, st.sampled_from(SPECIAL_PATHS)) if op == Op.GET_PERMS else p
        return path.map(lambda x: nul_args(x))
    if op == Op.WATCH:
        depth = st.one_of(st.none(), st.sampled_from(["0", "1", "2", "-1", "abc", ""]))
        path = st.one_of(p, st.sampled_from(SPECIAL_PATHS))
        return st.builds(lambda w, t, dd: nul_args(w, t) if dd is None else nul_args(w, t, dd),
                         path, tokens(small), depth)
    if op == Op.UNWATCH:
        return st.builds(nul_args, st.one_of(p, st.sampled_from(SPECIAL_PATHS)), tokens(small))
    if op == Op.TRANSACTION_START:
        return st.sampled_from([b"", b"\0", b"x\0"])
    if op == Op.TRANSACTION_END:
        return st.sampled_from([b"T\0", b"F\0", b"T\0", b"F\0", b"TT\0", b"", b"T", b"X\0"])
    if op == Op.INTRODUCE:
        return st.builds(lambda a, b, c: nul_args(a, b, c), d,
                         st.sampled_from(["0", "1", "4096", "x"]),
                         st.sampled_from(["0", "1", "2", "-1", "x", "9"]))
    if op in (Op.RELEASE, Op.GET_DOMAIN_PATH, Op.IS_DOMAIN_INTRODUCED, Op.RESUME):
        return d.map(lambda x: nul_args(x))
    if op == Op.WRITE:
        return st.builds(lambda x, v: _latin(x) + b"\0" + v, p, values(small))
    if op == Op.SET_PERMS:
        path = st.one_of(p, st.sampled_from(SPECIAL_PATHS))
        return st.builds(lambda x, ps: nul_args(x, *ps), path, perm_lists(small))
    if op == Op.SET_TARGET:
        return st.builds(nul_args, d, d)
    if op == Op.RESET_WATCHES:
        return st.sampled_from([b"", b"\0", b"x\0"])
    if op == Op.DIRECTORY_PART:
        off = st.one_of(st.sampled_from(["0", "1", "2", "3", "-1", "x", "99999", ""]),
                        st.integers(0, 5000).map(str))
        return st.builds(nul_args, p, off)
    if op == Op.GET_FEATURE:
        return st.one_of(st.just(b""), d.map(lambda x: nul_args(x)))
    if op == Op.SET_FEATURE:
        return st.builds(nul_args, d, st.sampled_from(["0", "1", "2", "14", "15", "255", "x"]))
    if op in (Op.GET_QUOTA, Op.SET_QUOTA):
        quota = st.sampled_from(["nodes", "watches", "memory", "soft-memory", "path-max",
                                 "transactions", "bogus", ""])
        num = st.sampled_from(["0", "1", "100", "x", "4294967295"])
        return st.one_of(st.just(b""), st.builds(nul_args, quota), st.builds(nul_args, d, quota),
                         st.builds(nul_args, quota, num), st.builds(nul_args, d, quota, num))
    return st.binary(max_size=32)


ALL_OPS = tuple(range(TYPE_COUNT))


def op_types() -> st.SearchStrategy[int]:
    """Every type 0-26, plus unknown ones."""
    return st.one_of(st.sampled_from(ALL_OPS), st.sampled_from(ALL_OPS),
                     st.sampled_from([TYPE_COUNT, 28, 100, INVALID, 0xFFFFFFFF]),
                     st.integers(0, 2**32 - 1))


@st.composite
def packets(draw: st.DrawFn, tx_ids: st.SearchStrategy[int] | None = None,
            small: bool = False) -> Packet:
    """A whole request: type, ids and a (possibly malformed) payload."""
    op = draw(op_types())
    payload = draw(mangle(op_payloads(op, small)))
    tx = draw(tx_ids if tx_ids is not None else st.sampled_from([0, 0, 0, 1, 2, 0xFFFFFFFF]))
    req_id = draw(st.integers(0, 2**32 - 1))
    return Packet(op, req_id, tx, payload[:PAYLOAD_MAX])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at the (sorted, deduplicated) offsets ``cuts``."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


@st.composite
def byte_streams(draw: st.DrawFn) -> list[bytes]:
    """Raw bytes in arbitrary chunks: good packets, junk and hostile headers
    (``len`` over 4096, bit 31/30 set: XSA-72, XSA-420)."""
    parts = draw(st.lists(st.one_of(
        packets().map(Packet.encode),
        st.binary(max_size=40),
        st.builds(lambda t, n: Packet(t, 1, 0, b"").encode()[:12] + n.to_bytes(4, "little"),
                  op_types(), st.sampled_from([4096, 4097, 2**30, 2**31, 2**32 - 1])),
    ), max_size=8))
    data = b"".join(parts)
    cuts = draw(st.lists(st.integers(0, max(len(data), 1)), max_size=10))
    return chunked(data, cuts)
