"""Live update, the old instance's half (issue 6).

C's live update writes the whole store out and execs the new binary, which
reads it back: nobody is served meanwhile, for a time that grows with the
store (1.6 s at 120,000 nodes). Here the new program is started *beside*
the running daemon, with one end of a channel (``server/channel.py``); it
loads the snapshot and journal and follows the journal while this
instance goes on serving (``server/takeover.py``). Once it says it is
ready, this instance stops between two batches, lets go of the rings'
ports and the pid file, and sends the connections' state without the tree
(which the new one has read), with every descriptor (``SCM_RIGHTS``).
The new instance reads the last journal records, takes over and answers
the requester's ``OK``; only then does this one exit, without closing or
unlinking anything the new one uses. The pause is the connections' state
and the journal's tail, whatever the store's size.

Until the new instance has taken over, nothing is lost if it fails: this
instance stops it, takes its ports and pid file back, serves on, and
answers the requester why. Under ``--no-fork`` the original process stays
as the anchor that its supervisor watches (``server/anchor.py``).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import trio

from pyxenstored.effects import StartLiveUpdate
from pyxenstored.persist import handover
from pyxenstored.persist.image import Plain, RingState
from pyxenstored.server import anchor
from pyxenstored.server.channel import (
    ANCHOR_ENV,
    CHANNEL_ENV,
    ChannelClosed,
    receive_message,
    send_fds,
    send_message,
)

if TYPE_CHECKING:
    from pyxenstored.server.daemon import Server

log = logging.getLogger("pyxenstored.server")

#: Seconds the new program may take to load the store and say it is ready.
READY_TIMEOUT = 120.0
#: Seconds it may take, once it has the connections, to say it took over.
TAKEOVER_TIMEOUT = 30.0
#: How much lower the new program's scheduling priority is while it loads.
LOADING_NICENESS = 10
#: C's answer when the new binary cannot be started.
CANNOT_START = "Error activating new binary."


class UpdateFailed(Exception):
    """The update did not happen; ``reply`` is the requester's answer."""

    def __init__(self, reply: str, detail: str) -> None:
        super().__init__(detail)
        self.reply = reply


def check_binary(path: str) -> str | None:
    """C's checks of ``live-update -f`` (``lu_binary``), with its texts."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "File not accessible."
    if not mode & 0o111:
        return "File not executable."
    return None


def new_argv(start: StartLiveUpdate) -> list[str]:
    """The new program's command line: ``-c``'s, else ours, with ``-U`` (C
    ``lu_activate_binary``)."""
    args = start.cmdline.split() if start.cmdline is not None else sys.argv[1:]
    if "-U" not in args and "--live-update" not in args:
        args.append("-U")
    return [start.binary, *args]


class LiveUpdater:
    """At most one update at a time, driven by ``run`` in the server's nursery."""

    def __init__(self, server: Server) -> None:
        self.server = server
        #: True from ``-s`` until the update failed (or this process is gone).
        self.active = False
        self._start: StartLiveUpdate | None = None
        self._wanted = trio.Event()
        #: The new program, until it took over or was stopped.
        self._child: subprocess.Popen[bytes] | None = None
        #: The anchor's pipe: its write end is passed from instance to
        #: instance; the read end, while this process is to become the anchor.
        self._anchor_write: int | None = None
        self._anchor_read: int | None = None
        inherited = os.environ.pop(ANCHOR_ENV, None)
        if inherited is not None:
            self._anchor_write = int(inherited)

    def request(self, start: StartLiveUpdate) -> None:
        """``live-update -s``: begin, or answer at once why not."""
        server = self.server
        if server.state_dir is None or server.listener_fd is None:
            server.engine.live_update_failed(
                start, "Live update needs a state directory and a socket.")
            return
        self.active = True
        self._start = start
        self._wanted.set()

    async def run(self) -> None:
        server = self.server
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            start, self._start = self._start, None
            assert start is not None
            try:
                await self._update(start)
            except UpdateFailed as exc:
                log.error("live update failed: %s", exc)
                server.engine.live_update_failed(start, exc.reply)
            finally:
                self._stop_child()
                self.active = False
            server.flush()

    async def _update(self, start: StartLiveUpdate) -> None:
        """Returns only by raising ``UpdateFailed``: on success the process ends."""
        await self.server.wait_for_compaction()  # no file the new one needs may go
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            try:
                self._child = self._spawn(start, theirs)
            finally:
                theirs.close()
            with trio.move_on_after(READY_TIMEOUT):
                await trio.lowlevel.wait_readable(ours)
            ours.settimeout(0)
            try:
                ready = receive_message(ours)
            except (ChannelClosed, OSError) as exc:
                raise UpdateFailed(
                    CANNOT_START, f"the new program never got ready ({exc})") from exc
            if "error" in ready:
                raise UpdateFailed(CANNOT_START, f"the new program failed: {ready['error']}")
            log.info("live update: new instance (pid %d) ready; handing over", self._child.pid)
            self._hand_over(start, ours)

    def _spawn(self, start: StartLiveUpdate, theirs: socket.socket) -> subprocess.Popen[bytes]:
        """The new program, with the channel (and the anchor's pipe) and no
        other descriptor of ours: it must hold nothing it was not given."""
        argv = new_argv(start)
        env = dict(os.environ)
        env[CHANNEL_ENV] = str(theirs.fileno())
        keep = [theirs.fileno()]
        if self._anchor_write is None and self.server.foreground:
            self._anchor_read, self._anchor_write = os.pipe()
        if self._anchor_write is not None:
            env[ANCHOR_ENV] = str(self._anchor_write)
            keep.append(self._anchor_write)
        log.info("live update: starting %s", " ".join(argv))
        try:
            child = subprocess.Popen(argv, executable=start.binary, env=env, pass_fds=keep,
                                     stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise UpdateFailed(CANNOT_START, f"cannot start {start.binary}: {exc}") from exc
        if os.geteuid() == 0:  # it can raise its priority back (CAP_SYS_NICE)
            # Its start-up and loading must not take CPU from the serving
            # instance; it takes our priority with the connections.
            ours = os.getpriority(os.PRIO_PROCESS, 0)
            try:
                os.setpriority(os.PRIO_PROCESS, child.pid, min(19, ours + LOADING_NICENESS))
            except OSError:
                pass
        return child

    def _hand_over(self, start: StartLiveUpdate, ours: socket.socket) -> None:
        """Synchronous from first to last line: no other task runs, so every
        connection is between two batches. Exits the process on success."""
        server = self.server
        engine = server.engine
        durable = server.durable
        server.flush()
        fds = [server.listener_fd]
        shells: dict[int, Plain] = {}
        for conn_id, conn in server.connections.items():
            sock = getattr(conn.stream, "socket", None)
            if not isinstance(sock, trio.socket.SocketType):
                raise UpdateFailed(f"Connection {conn_id} cannot be handed over.",
                                   f"connection {conn_id} is not a socket")
            shells[conn_id] = {"fd": len(fds), "input": conn.unhandled_input(),
                               "unsent": bytes(conn.unsent)}
            fds.append(sock.fileno())
        released: list[tuple[int, int, RingState]] = []
        if server.rings is not None:
            released = server.rings.release()
        rings: dict[int, RingState] = {}
        for domid, conn_id, state in released:
            rings[domid] = shells[conn_id] = state
        shell: Plain = {"listener": 0, "journal": None,
                        "priority": os.getpriority(os.PRIO_PROCESS, 0)}
        if durable is not None:
            shell["journal"] = [durable.journal.seq, durable.journal.size]
        queued = {start.conn_id: [engine.live_update_reply(start, "OK")]}
        saved = handover.handover_out(engine, trio.current_time(), shells, rings, queued, shell,
                                      nodes=durable is None)
        server.release_pid_file()
        try:
            ours.settimeout(TAKEOVER_TIMEOUT)
            send_message(ours, saved)
            send_fds(ours, fds)  # type: ignore[arg-type]
            verdict = receive_message(ours)
            if verdict.get("taken"):
                send_message(ours, {"go": True})
                self._exit()
            problem = str(verdict.get("error"))
        except (OSError, EOFError) as exc:
            problem = f"no answer from the new instance ({exc})"
        # Only once it is gone may its ports and pid file be ours again.
        self._stop_child()
        server.reacquire_pid_file()
        if server.rings is not None:
            server.rings.reattach(released, server.dom0_event)
        raise UpdateFailed(f"New instance failed to take over: {problem}", problem)

    def _exit(self) -> None:
        assert self._child is not None
        pid = self._child.pid
        log.info("live update: pid %d took over; this instance exits", pid)
        self.server.tracer.flush()
        for handler in logging.getLogger().handlers:
            handler.flush()
        if self._anchor_read is not None:
            anchor.become(self._anchor_read, pid)  # does not return
        os._exit(0)

    def _stop_child(self) -> None:
        """Make sure the new program is gone and reaped."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()
        if self._anchor_read is not None:  # the next attempt makes a new pipe
            os.close(self._anchor_read)
            os.close(self._anchor_write)  # type: ignore[arg-type]
            self._anchor_read = self._anchor_write = None
