"""PyPI's pyxs 0.4.1 (a thread-based pure-Python client) against pyxenstored."""

from __future__ import annotations

import errno
import queue
import threading

import pytest

pyxs = pytest.importorskip("pyxs")
from pyxs.exceptions import PyXSError  # noqa: E402


def next_event(monitor, timeout: float = 5.0):
    """The next (path, token) a pyxs Monitor received.

    ``Monitor.wait()`` blocks forever, so read the queue it feeds directly.
    """
    try:
        return monitor.events.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no watch event within {timeout}s") from None


def test_read_write_list(xenstored_socket: str) -> None:
    with pyxs.Client(unix_socket_path=xenstored_socket) as c:
        c.write(b"/px/a", b"1")
        c.write(b"/px/b", b"with\x00nul")
        c.mkdir(b"/px/dir/sub")
        assert c.read(b"/px/a") == b"1"
        # pyxs sends 7-bit values only; an embedded NUL comes back as written.
        assert c.read(b"/px/b") == b"with\x00nul"
        assert c.read(b"/px/dir/sub") == b""
        assert sorted(c.list(b"/px")) == [b"a", b"b", b"dir"]
        assert c.exists(b"/px/dir")
        assert not c.exists(b"/px/nope")
        assert c.read(b"/px/nope", default=b"dflt") == b"dflt"
        with pytest.raises(PyXSError) as info:
            c.read(b"/px/nope")
        assert info.value.args[0] == errno.ENOENT
        c.delete(b"/px/dir")
        assert sorted(c.list(b"/px")) == [b"a", b"b"]
        assert c.get_domain_path(7) == b"/local/domain/7"
        walked = {path: value for path, value, _children in c.walk(b"/px")}
        assert walked == {b"/px": b"", b"/px/a": b"1", b"/px/b": b"with\x00nul"}


def test_permissions(xenstored_socket: str) -> None:
    with pyxs.Client(unix_socket_path=xenstored_socket) as c:
        c.write(b"/px/perm", b"v")
        assert c.get_perms(b"/px/perm") == [b"n0"]
        c.set_perms(b"/px/perm", [b"b0", b"r3", b"w4"])
        assert c.get_perms(b"/px/perm") == [b"b0", b"r3", b"w4"]
        # Children inherit the parent's permissions on creation.
        c.write(b"/px/perm/child", b"x")
        assert c.get_perms(b"/px/perm/child") == [b"b0", b"r3", b"w4"]
        assert c.get_perms(b"@releaseDomain")[0] == b"n0"


def test_transaction_commit_and_rollback(xenstored_socket: str) -> None:
    with pyxs.Client(unix_socket_path=xenstored_socket) as c:
        c.write(b"/px/tx", b"before")
        c.transaction()
        c.write(b"/px/tx", b"inside")
        c.write(b"/px/tx/new", b"n")
        assert c.read(b"/px/tx") == b"inside"
        with pyxs.Client(unix_socket_path=xenstored_socket) as other:
            assert other.read(b"/px/tx") == b"before"
            assert not other.exists(b"/px/tx/new")
        assert c.commit() is True
        assert c.read(b"/px/tx") == b"inside"
        assert c.read(b"/px/tx/new") == b"n"

        c.transaction()
        c.write(b"/px/tx", b"discarded")
        c.rollback()
        assert c.read(b"/px/tx") == b"inside"


def test_transaction_conflict(xenstored_socket: str) -> None:
    with (
        pyxs.Client(unix_socket_path=xenstored_socket) as c,
        pyxs.Client(unix_socket_path=xenstored_socket) as other,
    ):
        c.write(b"/px/conf", b"0")
        c.transaction()
        value = c.read(b"/px/conf")
        other.write(b"/px/conf", b"outside")
        c.write(b"/px/conf", value + b"1")
        assert c.commit() is False  # EAGAIN
        assert c.read(b"/px/conf") == b"outside"


def test_watch(xenstored_socket: str) -> None:
    with pyxs.Client(unix_socket_path=xenstored_socket) as c:
        c.mkdir(b"/px/w")  # pyxs refuses to write an empty value
        m = c.monitor()
        m.watch(b"/px/w", b"tok")
        # The immediate event after registration.
        assert tuple(next_event(m)) == (b"/px/w", b"tok")
        c.write(b"/px/w/child", b"1")
        assert tuple(next_event(m)) == (b"/px/w/child", b"tok")
        c.write(b"/px/unrelated", b"1")
        c.delete(b"/px/w")
        assert tuple(next_event(m)) == (b"/px/w", b"tok")
        # Only events for the watched subtree arrived.
        with pytest.raises(queue.Empty):
            m.events.get(timeout=0.3)
        m.unwatch(b"/px/w", b"tok")
        c.write(b"/px/w", b"after unwatch")
        with pytest.raises(queue.Empty):
            m.events.get(timeout=0.3)
        # Duplicate watches are refused.
        m.watch(b"/px/dup", b"t")
        with pytest.raises(PyXSError) as info:
            m.watch(b"/px/dup", b"t")
        assert info.value.args[0] == errno.EEXIST
        m.close()


def test_watch_from_another_thread(xenstored_socket: str) -> None:
    """A writer on its own connection in another thread; events still arrive."""
    with pyxs.Client(unix_socket_path=xenstored_socket) as c:
        m = c.monitor()
        m.watch(b"/px/thread", b"t")
        assert tuple(next_event(m)) == (b"/px/thread", b"t")

        def writer() -> None:
            with pyxs.Client(unix_socket_path=xenstored_socket) as w:
                for i in range(10):
                    w.write(b"/px/thread/%d" % i, b"x")

        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(10)
        got = [next_event(m)[0] for _ in range(10)]
        assert got == [b"/px/thread/%d" % i for i in range(10)]
        m.close()
