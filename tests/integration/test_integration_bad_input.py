"""Bad input over a raw socket (DESIGN invariant 3, spec 1.2, 2, 10).

Every malformed request gets an error reply on a connection that keeps
working; a header announcing an over-long payload closes that one
connection; a client that never reads its replies cannot take the daemon's
memory or other clients' service.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from integration_support import (
    ERROR,
    HEADER,
    WATCH_EVENT,
    ConnectionClosedError,
    Daemon,
    RawConnection,
    vm_rss_kib,
)

from pyxenstored.protocol.ops import Op


@pytest.fixture
def conn(shared_xenstored: Daemon):
    """A fresh connection to the module's daemon, with /bad/node reset."""
    assert shared_xenstored.alive(), "the shared daemon died in an earlier test"
    with RawConnection(shared_xenstored.socket_path) as raw:
        raw.expect_ok(Op.WRITE, b"/bad/node\0value")
        raw.expect_ok(Op.SET_PERMS, b"/bad/node\0n0\0")
        yield raw


def assert_alive(raw: RawConnection) -> None:
    """The connection still answers a normal request correctly."""
    assert raw.expect_ok(Op.READ, b"/bad/node\0") == b"value"


# -- NUL rules (spec 1.2) -----------------------------------------------------------

ONEARG_OPS = [
    Op.READ,
    Op.DIRECTORY,
    Op.GET_PERMS,
    Op.MKDIR,
    Op.RM,
    Op.TRANSACTION_END,
    Op.RELEASE,
    Op.RESUME,
    Op.GET_DOMAIN_PATH,
    Op.IS_DOMAIN_INTRODUCED,
]


def _onearg_arg(op: Op) -> bytes:
    if op == Op.TRANSACTION_END:
        return b"T"
    if op in (Op.RELEASE, Op.RESUME, Op.GET_DOMAIN_PATH, Op.IS_DOMAIN_INTRODUCED):
        return b"1"
    return b"/bad/node"


@pytest.mark.parametrize("op", ONEARG_OPS, ids=lambda op: op.name)
def test_onearg_ops_need_exactly_one_trailing_nul(conn: RawConnection, op: Op) -> None:
    arg = _onearg_arg(op)
    tx_id = 0
    if op == Op.TRANSACTION_END:
        _type, reply = conn.request(Op.TRANSACTION_START, b"\0")
        tx_id = int(reply[:-1])
    for payload in (arg, arg + b"\0\0", arg + b"\0x\0", b"\0" + arg + b"\0", b"", arg + b"\0x"):
        assert conn.expect_error(op, payload, tx_id) == "EINVAL", payload
        assert_alive(conn)


# Other ops, with payloads that have too few or too many strings.
MALFORMED = [
    (Op.WRITE, b""),
    (Op.WRITE, b"/bad/node"),  # no NUL after the path
    (Op.SET_PERMS, b"/bad/node"),
    (Op.SET_PERMS, b"/bad/node\0"),  # no permission at all
    (Op.WATCH, b""),
    (Op.WATCH, b"/bad/node\0"),
    (Op.WATCH, b"/bad/node\0tok"),  # token not terminated: one string
    (Op.WATCH, b"/bad/node\0tok\0" + b"1\0" + b"x\0"),  # four strings
    (Op.UNWATCH, b"/bad/node\0"),
    (Op.UNWATCH, b"/bad/node\0tok\0extra\0"),
    (Op.INTRODUCE, b"5\0"),
    (Op.INTRODUCE, b"5\0" + b"1\0"),
    (Op.SET_TARGET, b"5\0"),
    (Op.SET_TARGET, b""),
    (Op.DIRECTORY_PART, b"/bad\0"),
    (Op.DIRECTORY_PART, b"/bad\0" + b"0\0" + b"x\0"),
    (Op.SET_FEATURE, b"1\0"),
    (Op.SET_FEATURE, b"1\0" + b"2\0" + b"3\0"),
    (Op.GET_QUOTA, b"0\0" + b"nodes\0" + b"x\0"),
    (Op.SET_QUOTA, b"nodes\0"),
    (Op.SET_QUOTA, b"0\0" + b"nodes\0" + b"5\0" + b"x\0"),
    (Op.CONTROL, b""),
    (Op.CONTROL, b"check"),  # no terminator: zero strings
    (Op.CONTROL, b"no-such-command\0"),
    (Op.TRANSACTION_END, b"T\0"),  # tx_id 0: no transaction (ENOENT, tested below)
]


@pytest.mark.parametrize(
    ("op", "payload"), MALFORMED, ids=[f"{op.name}-{p!r}" for op, p in MALFORMED]
)
def test_malformed_strings_get_einval(conn: RawConnection, op: Op, payload: bytes) -> None:
    expected = "ENOENT" if op == Op.TRANSACTION_END else "EINVAL"
    assert conn.expect_error(op, payload) == expected
    assert_alive(conn)


def test_every_op_with_junk_keeps_the_connection(conn: RawConnection) -> None:
    """Whatever each op makes of junk payloads, it answers and stays connected."""
    junk = [b"", b"\0", b"\0\0\0", b"x", b"x\0y\0z\0w\0v\0u\0t\0", b"\xff\xfe\0\x80\0", b"/" * 4096]
    for op in range(Op.SET_QUOTA + 1):
        if op in (Op.CONTROL,):
            continue  # CONTROL junk may legitimately run commands; covered above
        for payload in junk:
            req_id = conn.send(op, payload)
            type_, got_req, _tx, reply = conn.receive_reply()
            assert got_req == req_id
            if type_ == ERROR:
                assert reply.endswith(b"\0") and reply[:1] == b"E", reply
            else:
                assert type_ == op
        assert_alive(conn)


def test_write_value_may_contain_nuls(conn: RawConnection) -> None:
    conn.expect_ok(Op.WRITE, b"/bad/bin\0a\0b\0\0")
    assert conn.expect_ok(Op.READ, b"/bad/bin\0") == b"a\0b\0\0"


# -- paths (spec 2 and XSA-481) ------------------------------------------------------

BAD_PATHS = [
    b"/local/domain/",
    b"/local/domain/x/",
    b"/local/domain/0/",
    b"local/domain/",  # relative variants
    b"x/",
    b"//",
    b"/a//b",
    b"/bad/",
    b"/bad/node/",
    b"",
    b"/bad/no de",
    b"/bad/n\xc3\xa9",
    b"/bad/node.x",
    b"/bad/node:x",
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=repr)
@pytest.mark.parametrize(
    "op", [Op.READ, Op.WRITE, Op.MKDIR, Op.RM, Op.DIRECTORY, Op.GET_PERMS], ids=lambda o: o.name
)
def test_malformed_paths_get_einval(conn: RawConnection, op: Op, path: bytes) -> None:
    payload = path + b"\0" + (b"v" if op == Op.WRITE else b"")
    assert conn.expect_error(op, payload) == "EINVAL"
    assert_alive(conn)


@pytest.mark.parametrize("path", BAD_PATHS, ids=repr)
def test_malformed_watch_paths_get_einval(conn: RawConnection, path: bytes) -> None:
    assert conn.expect_error(Op.WATCH, path + b"\0tok\0") == "EINVAL"
    assert conn.expect_error(Op.SET_PERMS, path + b"\0n0\0") == "EINVAL"
    assert_alive(conn)


def test_special_paths_only_where_allowed(conn: RawConnection) -> None:
    for op in (Op.READ, Op.DIRECTORY, Op.MKDIR, Op.RM):
        assert conn.expect_error(op, b"@releaseDomain\0") == "EINVAL"
    assert conn.expect_error(Op.WRITE, b"@releaseDomain\0x") == "EINVAL"
    assert conn.expect_ok(Op.GET_PERMS, b"@releaseDomain\0").startswith(b"n0\0")


def test_rm_root_is_einval(conn: RawConnection) -> None:
    assert conn.expect_error(Op.RM, b"/\0") == "EINVAL"
    assert_alive(conn)


def test_large_domid_path_from_privileged_socket(conn: RawConnection) -> None:
    """``/local/domain/99999/a`` (XSA-481 list): no crash, and answered.

    For a privileged socket caller C applies no path-max check, so the path
    is an ordinary absolute path: READ says ENOENT, WRITE creates it.
    """
    assert conn.expect_error(Op.READ, b"/local/domain/99999/a\0") == "ENOENT"
    conn.expect_ok(Op.WRITE, b"/local/domain/99999/a\0v")
    assert conn.expect_ok(Op.READ, b"/local/domain/99999/a\0") == b"v"
    assert_alive(conn)


def test_long_paths(conn: RawConnection) -> None:
    """Privileged sockets are limited only by the payload size."""
    long_path = b"/bad/" + b"x" * 3000
    conn.expect_ok(Op.WRITE, long_path + b"\0v")
    assert conn.expect_ok(Op.READ, long_path + b"\0") == b"v"
    assert_alive(conn)


# -- permission strings (spec 1.5 SET_PERMS, 10) -------------------------------------

BAD_PERMS = [b"x0", b"r", b"", b"rabc", b"r1x", b"R0", b"0", b"r0\xff", b"rw0", b"r--1"]


@pytest.mark.parametrize("perm", BAD_PERMS, ids=repr)
def test_malformed_permission_strings_get_einval(conn: RawConnection, perm: bytes) -> None:
    assert conn.expect_error(Op.SET_PERMS, b"/bad/node\0" + perm + b"\0") == "EINVAL"
    # A bad entry after a good owner is refused too, and nothing changes.
    assert conn.expect_error(Op.SET_PERMS, b"/bad/node\0n0\0" + perm + b"\0") == "EINVAL"
    assert conn.expect_ok(Op.GET_PERMS, b"/bad/node\0") == b"n0\0"
    assert_alive(conn)


def test_permission_domids_use_strtol_base_0(conn: RawConnection) -> None:
    conn.expect_ok(Op.SET_PERMS, b"/bad/node\0n0\0r0x10\0w010\0")
    assert conn.expect_ok(Op.GET_PERMS, b"/bad/node\0") == b"n0\0r16\0w8\0"


def test_too_many_permissions_is_enospc(conn: RawConnection) -> None:
    # node-permissions quota (5) applies to unprivileged callers only in C;
    # a privileged socket may set more. Either way: answered, alive.
    perms = b"".join(b"r%d\0" % i for i in range(1, 40))
    type_, reply = conn.request(Op.SET_PERMS, b"/bad/node\0n0\0" + perms)
    assert type_ in (Op.SET_PERMS, ERROR), reply
    assert_alive(conn)


# -- transactions ---------------------------------------------------------------------


def test_bad_transaction_ids_and_nesting(conn: RawConnection) -> None:
    assert conn.expect_error(Op.READ, b"/bad/node\0", tx_id=12345) == "ENOENT"
    _type, reply = conn.request(Op.TRANSACTION_START, b"\0")
    tx = int(reply[:-1])
    assert conn.expect_error(Op.TRANSACTION_START, b"\0", tx_id=tx) == "EBUSY"
    assert conn.expect_error(Op.TRANSACTION_END, b"TT\0", tx_id=tx) == "EINVAL"
    assert conn.expect_error(Op.TRANSACTION_END, b"X\0", tx_id=tx) == "EINVAL"
    conn.expect_ok(Op.TRANSACTION_END, b"F\0", tx_id=tx)
    assert conn.expect_error(Op.TRANSACTION_END, b"F\0", tx_id=tx) == "ENOENT"
    assert_alive(conn)


def test_reset_watches_inside_a_transaction(conn: RawConnection) -> None:
    """XSA-484: RESET_WATCHES with a live tx_id drops the transaction."""
    _type, reply = conn.request(Op.TRANSACTION_START, b"\0")
    tx = int(reply[:-1])
    conn.expect_ok(Op.RESET_WATCHES, b"", tx_id=tx)
    assert conn.expect_error(Op.READ, b"/bad/node\0", tx_id=tx) == "ENOENT"
    assert_alive(conn)


def test_transaction_rereads_see_the_first_read(conn: RawConnection) -> None:
    """Spec 4.2: after the first access, reads in a transaction see its copy.

    This is the sequence of test-xenstore's "ta err" test.
    """
    conn.expect_ok(Op.WRITE, b"/bad/ta\0a")
    _type, reply = conn.request(Op.TRANSACTION_START, b"\0")
    tx = int(reply[:-1])
    assert conn.expect_ok(Op.READ, b"/bad/ta\0", tx_id=tx) == b"a"
    conn.expect_ok(Op.WRITE, b"/bad/ta\0b")
    assert conn.expect_ok(Op.READ, b"/bad/ta\0", tx_id=tx) == b"a"
    conn.expect_ok(Op.WRITE, b"/bad/ta\0c", tx_id=tx)
    assert conn.expect_ok(Op.READ, b"/bad/ta\0", tx_id=tx) == b"c"
    assert conn.expect_error(Op.TRANSACTION_END, b"T\0", tx_id=tx) == "EAGAIN"
    assert conn.expect_ok(Op.READ, b"/bad/ta\0") == b"b"


# -- unknown op codes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "op", [Op.WATCH_EVENT, Op.ERROR, Op.RESTRICT, 27, 28, 100, 0xFFFF, 0x10000, 0xFFFFFFFF]
)
def test_unknown_ops_get_enosys(conn: RawConnection, op: int) -> None:
    assert conn.expect_error(op, b"/bad/node\0") == "ENOSYS"
    assert conn.expect_error(op, b"") == "ENOSYS"
    assert_alive(conn)


# -- over-long headers (XSA-72, XSA-420) -----------------------------------------------


@pytest.mark.parametrize("length", [4097, 8192, 0x40000000, 0x80000000, 0xFFFFFFFF])
def test_over_long_header_closes_only_that_connection(xenstored: Daemon, length: int) -> None:
    with RawConnection(xenstored.socket_path) as other, RawConnection(xenstored.socket_path) as bad:
        other.expect_ok(Op.WRITE, b"/bad/node\0value")
        bad.expect_ok(Op.READ, b"/bad/node\0")
        bad.send_raw(HEADER.pack(Op.WRITE, 7, 0, length) + b"/x\0" + b"y" * 100)
        assert bad.is_closed(timeout=5), "the daemon kept a connection that sent len > 4096"
        with pytest.raises((ConnectionClosedError, OSError)):
            bad.request(Op.READ, b"/bad/node\0")
        assert_alive(other)
    # New connections are still accepted.
    with RawConnection(xenstored.socket_path) as fresh:
        assert_alive(fresh)


def test_exactly_4096_bytes_is_accepted(conn: RawConnection) -> None:
    payload = b"/bad/big\0" + b"v" * (4096 - len(b"/bad/big\0"))
    assert len(payload) == 4096
    conn.expect_ok(Op.WRITE, payload)
    assert_alive(conn)


def test_oversized_reply_is_e2big(conn: RawConnection) -> None:
    for i in range(40):
        conn.expect_ok(Op.MKDIR, b"/bad/wide/%s\0" % (b"%03d" % i + b"c" * 120))
    assert conn.expect_error(Op.DIRECTORY, b"/bad/wide\0") == "E2BIG"
    assert_alive(conn)


def test_header_split_across_writes(conn: RawConnection) -> None:
    """A request dribbled byte by byte is still one request."""
    data = HEADER.pack(Op.READ, 99, 0, len(b"/bad/node\0")) + b"/bad/node\0"
    for i in range(len(data)):
        conn.send_raw(data[i : i + 1])
        time.sleep(0.001)
    type_, req_id, _tx, payload = conn.receive_reply()
    assert (type_, req_id, payload) == (Op.READ, 99, b"value")


def test_disconnect_mid_packet(xenstored: Daemon) -> None:
    for cut in (3, 16, 20):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(xenstored.socket_path)
        sock.sendall((HEADER.pack(Op.WRITE, 1, 0, 40) + b"/bad/x\0" + b"v" * 33)[:cut])
        sock.close()
    with RawConnection(xenstored.socket_path) as raw:
        raw.expect_ok(Op.WRITE, b"/bad/node\0value")
        assert_alive(raw)
        assert raw.expect_error(Op.READ, b"/bad/x\0") == "ENOENT"


# -- a client that never reads (XSA-326, XSA-416) ------------------------------------------

PIPELINED = 10_000


def _connect_nonblocking(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def test_pipelined_requests_from_a_client_that_never_reads(xenstored: Daemon) -> None:
    setup = RawConnection(xenstored.socket_path)
    big = b"z" * 4000
    setup.expect_ok(Op.WRITE, b"/bad/big\0" + big)
    setup.expect_ok(Op.WRITE, b"/bad/node\0value")
    setup.close()
    time.sleep(0.2)
    rss_before = vm_rss_kib(xenstored.pid)

    # 10,000 READs of a 4000-byte node: 40 MB of replies if the daemon
    # buffered them all. The flooder never reads until the end.
    request = b"/bad/big\0"
    stream = b"".join(HEADER.pack(Op.READ, i, 0, len(request)) + request for i in range(PIPELINED))
    flooder = _connect_nonblocking(xenstored.socket_path)
    sent = 0
    done = threading.Event()

    def flood() -> None:
        nonlocal sent
        try:
            view = memoryview(stream)
            while sent < len(stream):
                sent += flooder.send(view[sent : sent + 65536])
        except OSError:
            pass
        finally:
            done.set()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    time.sleep(2.0)  # let the daemon take as much as it will

    # Another client is served promptly meanwhile.
    with RawConnection(xenstored.socket_path, timeout=5) as other:
        worst = 0.0
        for i in range(50):
            start = time.monotonic()
            other.expect_ok(Op.WRITE, b"/bad/other/%d\0x" % i)
            assert other.expect_ok(Op.READ, b"/bad/node\0") == b"value"
            worst = max(worst, time.monotonic() - start)
        assert worst < 1.0, f"a second client waited {worst:.2f}s for a reply"

    assert xenstored.alive()
    rss_after = vm_rss_kib(xenstored.pid)
    growth_mib = (rss_after - rss_before) / 1024
    assert growth_mib < 50, f"RSS grew by {growth_mib:.1f} MiB ({rss_before} -> {rss_after} KiB)"

    # Now read everything: every request is answered, in order, none lost.
    flooder.settimeout(30)
    buffer = bytearray()
    expected = 0
    header = struct.Struct("=IIII")
    deadline = time.monotonic() + 60
    while expected < PIPELINED:
        assert time.monotonic() < deadline, f"only {expected} replies"
        chunk = flooder.recv(1 << 20)
        assert chunk, f"connection closed after {expected} replies"
        buffer += chunk
        offset = 0
        while len(buffer) - offset >= header.size:
            type_, req_id, _tx, length = header.unpack_from(buffer, offset)
            if len(buffer) - offset - header.size < length:
                break
            assert (type_, req_id, length) == (Op.READ, expected, len(big))
            offset += header.size + length
            expected += 1
        del buffer[:offset]
    thread.join(10)
    assert done.is_set() and sent == len(stream)
    flooder.close()
    assert xenstored.alive()


def test_oversized_watch_event_is_dropped(conn: RawConnection) -> None:
    """XSA-324: an event over 4096 bytes is dropped; the connection carries on."""
    token = b"T" * 4000
    conn.send(Op.WATCH, b"/bad/xsa324\0" + token + b"\0")
    assert {conn.receive()[0], conn.receive()[0]} == {Op.WATCH, WATCH_EVENT}
    req = conn.send(Op.WRITE, b"/bad/xsa324/" + b"x" * 200 + b"\0v")
    assert conn.receive()[:2] == (Op.WRITE, req)  # no event before the reply
    req = conn.send(Op.WRITE, b"/bad/xsa324\0v")
    event = conn.receive()
    assert event[0] == WATCH_EVENT and event[3] == b"/bad/xsa324\0" + token + b"\0"
    assert conn.receive()[:2] == (Op.WRITE, req)
    assert_alive(conn)
