"""The ``--no-fork`` anchor: the process a supervisor started stays its daemon.

A live update hands the daemon to a new process (``server/handover.py``).
A supervisor that started ``pyxenstored --no-fork`` (systemd, a test, a
terminal) watches the pid it started, so that process does not exit when
it hands over: it execs this small program, which holds no descriptor of
the daemon's and little memory, and:

- is the child subreaper of what it started, so every later instance,
  orphaned when its own predecessor exits, becomes its child;
- learns each new instance's pid from a pipe the instances pass on (each
  writes its pid there once it has taken over);
- forwards SIGTERM, SIGINT and SIGHUP to the current instance;
- exits with the current instance's status when it ends.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def become(read_fd: int, pid: int) -> None:
    """Exec the anchor in this process (same pid); does not return. The
    signals it forwards stay blocked (and pending) until it can forward them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    os.set_inheritable(read_fd, True)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    os.execve(sys.executable,
              [sys.executable, "-m", "pyxenstored.server.anchor", str(read_fd), str(pid)], env)


def exit_code(status: int) -> int:
    """A shell's rendering of a wait status: the code, or 128 + signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class Anchor:
    def __init__(self, read_fd: int, pid: int) -> None:
        self.read_fd = read_fd
        self.current = pid
        self._buffer = b""
        self._open = True

    def forward(self, signum: int, _frame: object) -> None:
        try:
            os.kill(self.current, signum)
        except ProcessLookupError:
            pass

    def read_pids(self, block: bool) -> None:
        """Take the pids the instances announced (the newest is current)."""
        while self._open:
            readable, _, _ = select.select([self.read_fd], [], [], 1.0 if block else 0)
            if not readable:
                return
            chunk = os.read(self.read_fd, 4096)
            if not chunk:
                self._open = False  # every instance is gone; their statuses follow
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self.current = int(line)
            block = False

    def run(self) -> int:
        while True:
            self.read_pids(block=True)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return 0
                if pid == 0:
                    break
                self.read_pids(block=False)  # a successor announces itself before this exits
                if pid == self.current:
                    return exit_code(status)


def main(argv: list[str]) -> int:
    anchor = Anchor(int(argv[1]), int(argv[2]))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    for signum in FORWARDED:
        signal.signal(signum, anchor.forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    return anchor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
