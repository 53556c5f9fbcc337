"""Live update, the new instance's half (issue 6): ``pyxenstored -U``.

Started by the old instance with one end of the channel
(``server/channel.py``), it:

1. loads the snapshot and the journal of the state directory and follows
   the journal as the old instance appends to it (``persist/follow.py``),
   while the old instance serves: this is the long part, and nobody waits
   for it;
2. says it is ready, and goes on following until the old instance sends
   the connections' state (without the tree) and its descriptors;
3. reads the journal to where the old instance stopped, rebuilds the
   connections, takes the pid file and opens its own journal segment, and
   says it took over; the old instance exits and this one serves.

Any failure before step 3 ends in an ``error`` message: the old instance
then serves on.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import attrs
import cbor2
import trio

from pyxenstored.engine import Engine
from pyxenstored.persist import handover, image
from pyxenstored.persist.follow import JournalFollower
from pyxenstored.persist.image import ImageError, RingState
from pyxenstored.server.channel import CHANNEL_ENV, receive_fds, receive_message, send_message

log = logging.getLogger("pyxenstored.server")

#: Seconds between looks at the journal while the old instance serves.
FOLLOW_PERIOD = 0.005
#: Seconds to wait for the old instance's last records to become readable.
TAIL_TIMEOUT = 2.0


class NoChannel(Exception):
    """``-U`` without a live update to take part in."""


@attrs.frozen
class Adopted:
    """What the new instance takes over, for ``serve``."""

    listener_fd: int
    #: Socket connections: id -> (stream, unhandled input, unsent output).
    sockets: dict[int, tuple[trio.SocketStream, bytes, bytes]]
    #: Rings' states by domid, applied as each ring is re-attached.
    rings: dict[int, RingState]


def open_channel() -> socket.socket:
    value = os.environ.pop(CHANNEL_ENV, None)
    if value is None:
        raise NoChannel(
            f"live update (-U): no state to take over (no {CHANNEL_ENV}: only a running"
            " pyxenstored starts its successor)"
        )
    return socket.socket(fileno=int(value))


class Takeover:
    """One take-over, on the channel the old instance opened."""

    def __init__(self, state_dir: str | None, channel: socket.socket) -> None:
        self.channel = channel
        self.follower = JournalFollower(state_dir) if state_dir is not None else None

    def fail(self, exc: BaseException) -> None:
        """Tell the old instance, which then serves on."""
        try:
            send_message(self.channel, {"error": f"{type(exc).__name__}: {exc}"})
        except OSError:
            pass
        self.close()

    def preload(self, engine: Engine) -> None:
        """Step 1: the store as journaled so far, then say so."""
        follower = self.follower
        if follower is not None:
            gc.disable()  # hundreds of thousands of objects, none of them garbage
            try:
                snapshot = follower.start()
                if snapshot is not None:
                    image.load_store(engine, cbor2.loads(snapshot))
                self._follow(engine)
            finally:
                gc.enable()
        send_message(self.channel, {"ready": os.getpid()})

    def _follow(self, engine: Engine) -> None:
        assert self.follower is not None
        records = self.follower.poll()
        if records:
            image.replay(engine.tree, map(cbor2.loads, records))

    def receive(self, engine: Engine, now: float) -> Adopted:
        """Step 2 and the first half of 3: wait, following the journal, for
        the connections; then rebuild them."""
        channel = self.channel
        while not select.select([channel], [], [], FOLLOW_PERIOD)[0]:
            if self.follower is not None:
                self._follow(engine)
        saved: dict[str, Any] = receive_message(channel)
        shell = saved["shell"]
        try:  # the old instance lowered it while we loaded
            os.setpriority(os.PRIO_PROCESS, 0, shell["priority"])
        except OSError as exc:
            log.warning("cannot take the old instance's priority back: %s", exc)
        sockets_count = sum("fd" in entry["shell"] for entry in saved["connections"])
        fds = receive_fds(channel, 1 + sockets_count)
        gc.disable()
        try:
            if shell["journal"] is not None:
                self._catch_up(engine, tuple(shell["journal"]))
            shells = handover.handover_in(engine, saved, now)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        finally:
            gc.enable()
        gc.freeze()
        sockets: dict[int, tuple[trio.SocketStream, bytes, bytes]] = {}
        rings: dict[int, RingState] = {}
        for conn_id, entry in shells.items():
            if "fd" in entry:
                sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fds[entry["fd"]]))
                sockets[conn_id] = (trio.SocketStream(sock), entry["input"], entry["unsent"])
            elif entry:
                rings[engine.connections[conn_id].domid] = entry
        return Adopted(fds[shell["listener"]], sockets, rings)

    def _catch_up(self, engine: Engine, position: tuple[int, ...]) -> None:
        """Read the journal up to exactly where the old instance stopped."""
        follower = self.follower
        assert follower is not None
        deadline = time.monotonic() + TAIL_TIMEOUT
        while True:
            self._follow(engine)
            if follower.position == position:
                return
            if follower.position > position or time.monotonic() > deadline:
                raise ImageError(
                    f"the journal read ends at {follower.position}, the old instance's at"
                    f" {position}"
                )
            time.sleep(0.001)

    def commit(self, finish: Callable[[], None]) -> None:
        """The rest of step 3: ``finish`` (take the pid file, open the
        journal), say so, and wait for the old instance to let go."""
        finish()
        send_message(self.channel, {"taken": True})
        self.channel.settimeout(TAIL_TIMEOUT)
        try:
            receive_message(self.channel)  # "go"; or the end: it is gone
        except (OSError, EOFError):
            pass
        self.close()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        self.channel.close()
