"""Process-level chores of a Unix daemon: detaching, the pid file, readiness.

These run outside trio (``daemonize`` must fork before ``trio.run``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import sys

log = logging.getLogger("pyxenstored.server")

#: Readiness codes the detached daemon sends its waiting parent.
READY = b"R"
ALREADY_RUNNING = b"A"


def ensure_state_dir(path: str) -> None:
    """Create the state directory (mode 0700) if it does not exist."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "state dir is not a directory", path)


def daemonize() -> int:
    """Detach like C xenstored: fork, setsid, fork again, chdir ``/``.

    Unlike C, the original process does not exit at once: it waits until
    the daemon reports (``report``) that it is listening, and exits 0 then,
    or 1 if the daemon died first, so a start script knows the socket is
    ready. Returns the descriptor on which the daemon reports.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:  # the original process
        os.close(write_fd)
        status = b""
        while chunk := os.read(read_fd, 16):
            status += chunk
        os.waitpid(pid, 0)
        os._exit(0 if status in (READY, ALREADY_RUNNING) else 1)
    os.close(read_fd)
    os.setsid()  # a session leader, so ^C on the terminal does not reach us
    if os.fork() > 0:
        os._exit(0)  # the session leader exits: we can never regain a tty
    os.chdir("/")
    # C sets umask(0); every file this daemon creates has an explicit mode.
    os.umask(0o022)
    os.set_inheritable(write_fd, False)
    return write_fd


def report(fd: int | None, status: bytes) -> None:
    """Tell the parent waiting in ``daemonize`` how the start went."""
    if fd is None:
        return
    try:
        os.write(fd, status)
    except OSError:
        pass
    finally:
        os.close(fd)


def redirect_stdio() -> None:
    """Point stdin, stdout and stderr at /dev/null (C's ``finish_daemonize``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def notify_systemd(state: str = "READY=1") -> None:
    """sd_notify(3) without libsystemd: C xenstored reports READY=1 so."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)


class PidFile:
    """A pid file held locked (``lockf``) for as long as the daemon runs.

    C exits silently when another daemon holds the lock; ``acquire``
    returns False then.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def close(self) -> None:
        """Let go of the lock but leave the file (a live update's new
        instance takes it over)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)
