"""CONTROL ``live-update``: the session Xen's ``xenstore-control`` drives (spec 8.1).

``-f <binary>`` opens a session bound to the requesting connection, ``-c``
sets the new command line, ``-s`` starts the update and ``-a`` aborts.
Every step answers a string, ``OK`` on success, as C does; the shell
carries out ``-s`` (``StartLiveUpdate``), so that request gets its ``OK``
from the new instance, or an error text from this one if the update
failed. Unlike C, open transactions never hold an update back: they are
carried over, so ``-t`` and ``-F`` are accepted and have nothing to wait for.
"""

from collections.abc import Callable

import attrs

from pyxenstored.effects import StartLiveUpdate
from pyxenstored.protocol.args import atoi
from pyxenstored.protocol.errors import XenstoreError

#: The newest Xen migration stream version (spec 8.3); ``-v`` may ask for less.
STREAM_VERSION = 2


@attrs.define
class Session:
    conn_id: int
    binary: str
    cmdline: str | None = None


def check_executable(path: str) -> str | None:
    """The default check of ``-f`` for an engine with no host to ask: refuse."""
    return "File not accessible."


@attrs.define
class LiveUpdate:
    """At most one session, as in C."""

    #: Why ``path`` cannot be the new binary (C's texts), or None if it can.
    #: The shell installs one that looks at the file system.
    check_binary: Callable[[str], str | None] = check_executable
    session: Session | None = None

    def control(self, conn_id: int, req_id: int, tx_id: int,
                args: tuple[str, ...]) -> tuple[str | None, StartLiveUpdate | None]:
        """One ``live-update`` request: (reply text or None, effect or None)."""
        if not args:
            raise XenstoreError("EINVAL")
        option, rest = args[0], args[1:]
        if option == "-a":
            if rest:
                raise XenstoreError("EINVAL")
            if self.session is None:
                return "No live-update session active.", None
            self.session = None
            return "OK", None
        if option == "-c":
            if len(rest) != 1:
                raise XenstoreError("EINVAL")
            if self.session is None or self.session.conn_id != conn_id:
                return "Not in live-update session.", None
            self.session.cmdline = rest[0]
            return "OK", None
        if option == "-f" and len(rest) == 1:
            problem = self.check_binary(rest[0])
            if problem is not None:
                return problem, None
            if self.session is not None:
                return "live-update session already active.", None
            self.session = Session(conn_id, rest[0])
            return "OK", None
        if option == "-s":
            return self._start(conn_id, req_id, tx_id, rest)
        raise XenstoreError("EINVAL")  # -b/-d: the stub-domain variant

    def _start(self, conn_id: int, req_id: int, tx_id: int,
               rest: tuple[str, ...]) -> tuple[str | None, StartLiveUpdate | None]:
        version = STREAM_VERSION
        words = iter(rest)
        for word in words:
            if word == "-F":
                continue
            value = next(words, None)
            if word not in ("-t", "-v") or value is None:
                raise XenstoreError("EINVAL")
            if word == "-v":
                version = atoi(value)
        session = self.session
        if session is None or session.conn_id != conn_id:
            return "Not in live-update session.", None
        if not 0 < version <= STREAM_VERSION:
            return "Migration stream version not supported.", None
        return None, StartLiveUpdate(conn_id, req_id, tx_id, session.binary, session.cmdline)

    def connection_closed(self, conn_id: int) -> None:
        """A session dies with its connection (C frees it with the connection)."""
        if self.session is not None and self.session.conn_id == conn_id:
            self.session = None

    def finished(self) -> None:
        self.session = None
