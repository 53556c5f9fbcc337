"""The Unix socket the tools connect to.

trio has no high-level Unix listener, so this builds one from a plain
socket wrapped by ``trio.socket.from_stdlib_socket`` and handed to
``trio.SocketListener``. As C xenstored (``init_sockets``), a stale socket
left at the path is removed first and the new one is made mode 0600; unlike
C, a socket that a live daemon still answers on is not taken over.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import attrs
import trio

#: Pending connections the kernel queues for us (C uses 1; many tools connect at once).
LISTEN_BACKLOG = 128


class SocketInUseError(OSError):
    """Another daemon is answering on the socket path."""


@attrs.frozen
class BoundSocket:
    """What was bound, so that only our own socket file is removed on exit."""

    path: str
    device: int
    inode: int


def socket_accepts(path: str) -> bool:
    """Whether something listens on the Unix socket ``path`` (blocking, 1 s at most)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    if socket_accepts(path):
        raise SocketInUseError(errno.EADDRINUSE, "a daemon is already listening on", path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def open_unix_listener(
    path: str, *, mode: int = 0o600, backlog: int = LISTEN_BACKLOG
) -> tuple[trio.SocketListener, BoundSocket]:
    """Bind and listen on ``path``, returning the listener and what was bound.

    The socket file never exists with a mode wider than ``mode``: it is
    bound under a restrictive umask and then chmod-ed.
    """
    if len(os.fsencode(path)) >= 108:  # sizeof(sockaddr_un.sun_path)
        raise OSError(errno.ENAMETOOLONG, "socket path too long", path)
    _remove_stale(path)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            raw.bind(path)
        except OSError as exc:
            raise OSError(exc.errno, f"could not bind socket to {path}: {exc.strerror}") from exc
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        raw.listen(backlog)
        st = os.stat(path)
    except BaseException:
        raw.close()
        raise
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
    return listener, BoundSocket(path, st.st_dev, st.st_ino)


def adopt_unix_listener(fd: int, path: str) -> tuple[trio.SocketListener, BoundSocket]:
    """The listening socket a live update handed over: already bound at
    ``path``, it never stopped queueing connections."""
    raw = socket.socket(fileno=fd)
    raw.set_inheritable(False)
    st = os.stat(path)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
    return listener, BoundSocket(path, st.st_dev, st.st_ino)


def remove_socket(bound: BoundSocket) -> None:
    """Unlink the socket file if it is still the one we bound."""
    try:
        st = os.lstat(bound.path)
    except OSError:
        return
    if (st.st_dev, st.st_ino) != (bound.device, bound.inode):
        return  # a newer daemon's socket: leave it
    try:
        os.unlink(bound.path)
    except OSError:
        pass
