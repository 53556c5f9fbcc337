"""Live update, the shell's half: hand the whole daemon to a new program (issue 6).

The old instance, at the end of the flush that handled ``live-update -s``
(so every batch is journaled and every ring published), writes the
live-update image (``persist/handover.py``) with each socket's descriptor,
unhandled input and unsent output, clears close-on-exec on the listening
socket and the connections, and execs the new binary with ``-U``. Nothing
is closed or unlinked, so clients queue in the kernel meanwhile. The new
instance (``adopt``) rebuilds the engine from the image, takes the sockets
over, re-attaches the rings and answers the requester's ``OK``, which the
image carries at the end of its queue.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

import attrs
import cbor2
import trio

from pyxenstored.effects import StartLiveUpdate
from pyxenstored.engine import Engine
from pyxenstored.persist import handover
from pyxenstored.persist.image import Plain, RingState

if TYPE_CHECKING:
    from pyxenstored.server.daemon import Server

log = logging.getLogger("pyxenstored.server")

#: In the state directory; written by the old instance, read and removed by the new.
HANDOVER_FILE = "live-update.cbor"


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


def perform(server: Server, start: StartLiveUpdate) -> None:
    """Exec the new program; returns only if that failed (the requester is
    then told why, and this instance goes on serving)."""
    engine = server.engine
    if server.state_dir is None or server.listener_fd is None:
        engine.live_update_failed(start, "Live update needs a state directory and a socket.")
        return
    now = trio.current_time()
    shells: dict[int, Plain] = {}
    inherited = [server.listener_fd]
    for conn_id, conn in server.connections.items():
        sock = getattr(conn.stream, "socket", None)
        if not isinstance(sock, trio.socket.SocketType):
            engine.live_update_failed(start, f"Connection {conn_id} cannot be handed over.")
            return
        inherited.append(sock.fileno())
        shells[conn_id] = {
            "fd": sock.fileno(),
            "input": conn.unhandled_input(),
            "unsent": bytes(conn.unsent),
        }
    rings: dict[int, RingState] = {}
    if server.rings is not None:
        for conn_id, ring in server.rings.by_conn.items():
            rings[ring.domid] = shells[conn_id] = ring.state([])
    queued = {start.conn_id: [engine.live_update_reply(start, "OK")]}
    shell: Plain = {"listener": server.listener_fd, "compaction": None}
    durable = server.durable
    if durable is not None and durable.compacting is not None:
        shell["compaction"] = [durable.compacting, durable.compacting_seq]
    path = os.path.join(server.state_dir, HANDOVER_FILE)
    argv = new_argv(start)
    # The image is as big as the store, and nothing in it is garbage.
    gc.disable()
    try:
        saved = handover.handover_out(engine, now, shells, rings, queued, shell)
        _write(path, cbor2.dumps(saved))
        for fd in inherited:
            os.set_inheritable(fd, True)
        log.info("live update: exec %s", " ".join(argv))
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.execv(start.binary, argv)
    except OSError as exc:
        for fd in inherited:
            os.set_inheritable(fd, False)
        try:
            os.unlink(path)
        except OSError:
            pass
        log.error("live update failed: %s", exc)
        engine.live_update_failed(start, "Error activating new binary.")
    finally:
        gc.enable()


def _write(path: str, data: bytes) -> None:
    """Whole or not at all: the new instance must never read half an image."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.rename(tmp, path)


@attrs.frozen
class Adopted:
    """What the new instance takes over, for ``serve``."""

    listener_fd: int
    #: The old instance's snapshot writer (pid, seq), if one was running.
    compaction: tuple[int, int] | None
    #: Socket connections: id -> (stream, unhandled input, unsent output).
    sockets: dict[int, tuple[trio.SocketStream, bytes, bytes]]
    #: Rings' states by domid, applied as each ring is re-attached.
    rings: dict[int, RingState]


def adopt(engine: Engine, state_dir: str) -> Adopted:
    """Rebuild ``engine`` (newly made) from the image the old instance left,
    and take over its descriptors; the image file is removed."""
    path = os.path.join(state_dir, HANDOVER_FILE)
    if not os.path.exists(path):  # C: "No state file found"
        raise FileNotFoundError(errno.ENOENT, "live update (-U): no state to take over", path)
    gc.disable()  # as for recovery (persist/durable.py)
    try:
        with open(path, "rb") as file:
            saved: dict[str, Any] = cbor2.load(file)
        os.unlink(path)
        shells = handover.handover_in(engine, saved, trio.current_time())
    finally:
        gc.enable()
    gc.freeze()
    sockets: dict[int, tuple[trio.SocketStream, bytes, bytes]] = {}
    rings: dict[int, RingState] = {}
    for conn_id, shell in shells.items():
        if "fd" in shell:
            sock = trio.socket.from_stdlib_socket(socket.socket(fileno=shell["fd"]))
            sockets[conn_id] = (trio.SocketStream(sock), shell["input"], shell["unsent"])
        elif shell:
            rings[engine.connections[conn_id].domid] = shell
    compaction = saved["shell"]["compaction"]
    return Adopted(
        saved["shell"]["listener"],
        None if compaction is None else (compaction[0], compaction[1]),
        sockets,
        rings,
    )
