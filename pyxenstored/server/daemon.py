"""The trio shell: connection tasks that move bytes between sockets and the engine.

One ``Server`` owns the engine and a table from connection id to
``Connection``. Every client gets a connection task made of two tasks:

* the **reader** receives bytes, decodes every complete packet they hold and
  hands them to the engine as one batch (``Server.handle_batch``), after
  which every connection whose outbox got data (replies, or watch events
  for other connections) has it sent, or its writer woken;
* the **writer** sends everything else. When woken it takes *all* queued
  output of its connection from the engine (``take_output``) and sends it
  with one write, so a batch's replies leave together.

Output is sent at once, with no task switch, when the connection's writer
is idle with nothing unsent (``deliver_output``): by ``Server.flush``, once
the batch's journal record is written, to the requester first and then to
the connections its watch events went to. A client waiting
for each reply then costs one trip through trio's scheduler, not three, and
an event fanned out to a hundred watchers costs no trip at all. Whatever
the socket does not take at once is left to the writer, so output keeps
its order.

Backpressure: output stays in the engine's outbox until it is taken, and
it is taken only once the previous output was sent.
The reader feeds the engine at most ``reply_bound`` requests beyond the
replies still queued there; when ``engine.queued_replies(conn)`` reaches
the bound it stops (no more packets handled, no more bytes received) until
the writer has taken the output. A client that never reads therefore holds
at most one chunk being sent, ``reply_bound`` queued replies, its share of
watch events (bounded by the engine) and one received buffer of
``receive_size`` bytes; the kernel's socket buffers then push back on it.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import struct
from collections.abc import Sequence

import trio

from pyxenstored.config import Config
from pyxenstored.effects import (
    AttachRing,
    DetachRing,
    Effect,
    LogMessage,
    MemoryReport,
    ResetRing,
    StartLiveUpdate,
    TraceFile,
    TraceSwitches,
)
from pyxenstored.engine import Engine
from pyxenstored.persist.durable import DurableState
from pyxenstored.persist.image import RingState
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.wire import Packet
from pyxenstored.server.handover import LiveUpdater, check_binary
from pyxenstored.server.listener import adopt_unix_listener, open_unix_listener, remove_socket
from pyxenstored.server.process import PidFile
from pyxenstored.server.rings import Rings, XenBackend
from pyxenstored.server.takeover import Adopted
from pyxenstored.server.trace import Tracer

log = logging.getLogger("pyxenstored.server")

#: Bytes asked of the kernel per read; also bounds a stalled reader's buffer.
RECEIVE_SIZE = 65536
#: Replies queued per connection before its reader pauses, when the
#: configuration's ``outstanding`` quota is 0 (unlimited).
DEFAULT_REPLY_BOUND = 20
#: Seconds between the clock readings the engine gets (its timeouts are in seconds).
CLOCK_PERIOD = 1.0
#: Seconds to wait before accepting again after EMFILE and friends.
ACCEPT_RETRY_DELAY = 0.1
#: Seconds a connection closed for a protocol error may take to send the
#: replies to the good requests ahead of the bad header.
CLOSE_FLUSH_TIMEOUT = 1.0
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_UCRED = struct.Struct("3i")


def reply_bound_for(config: Config) -> int:
    """Queued replies per connection before its reader pauses."""
    return config.hard_quotas.get("outstanding", 0) or DEFAULT_REPLY_BOUND


def _peer_description(stream: trio.abc.Stream) -> str:
    """``pid N uid N`` of a Unix socket peer, for debug logs."""
    sock = getattr(stream, "socket", None)
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return ""
    try:
        pid, uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError:
        return ""
    return f"pid {pid} uid {uid}"


class Connection:
    """The shell's side of one client: its stream and its two tasks."""

    def __init__(self, server: Server, conn_id: int, stream: trio.abc.Stream) -> None:
        self.server = server
        self.conn_id = conn_id
        self.stream = stream
        #: Set when the engine may hold output for us; replaced once consumed.
        self._has_output = trio.Event()
        #: Set (and dropped) by the writer each time it takes output.
        self._taken: trio.Event | None = None
        #: Set (and dropped) by the writer when it has nothing left to send.
        self._idle: trio.Event | None = None
        #: Output taken from the engine and not yet sent (a live update hands
        #: it over byte-exact).
        self.unsent = bytearray()
        #: Requests handed to the engine, for statistics and tests.
        self.requests_handled = 0
        self._trace_decoder = Decoder()
        #: Input: the partial packet, and packets read but not yet handled.
        self.decoder = Decoder()
        self.backlog: Sequence[Packet] = ()
        #: The writer waits for output with nothing unsent.
        self._writer_idle = False
        #: The last read took less than asked: the socket is empty.
        self._drained = False
        sock = getattr(stream, "socket", None)
        #: The stream's socket, read and written directly (see ``_receive``).
        self._socket = sock if isinstance(sock, trio.socket.SocketType) else None

    @property
    def bytes_in_flight(self) -> int:
        return len(self.unsent)

    def unhandled_input(self) -> bytes:
        """What was read and not handled, as the bytes that came in."""
        return b"".join(p.encode() for p in self.backlog) + self.decoder.pending

    def _take_output(self) -> None:
        """Move the engine's queued output for us to ``unsent`` (traced)."""
        data = self.server.engine.take_output(self.conn_id)
        if data:
            tracer = self.server.tracer
            if tracer.io:
                tracer.output(self.conn_id, data, self._trace_decoder)
                tracer.flush()
            self.unsent += data

    def deliver_output(self) -> None:
        """Send our new output now, from whichever task made it, or leave it
        to the writer.

        A client that waits for each reply (most of them) would otherwise
        pay two extra trips through trio's scheduler per request, and a watch
        event fanned out to many connections one trip each. Only done while
        the writer is idle with nothing unsent, so the order of output holds;
        what the socket does not take at once, or refuses (the peer gone:
        the writer meets the error again and closes), is the writer's.
        """
        sock = self._socket
        if sock is None or not self._writer_idle or self.unsent:
            self._has_output.set()
            return
        self._take_output()
        unsent = self.unsent
        fd = sock.fileno()
        try:
            while unsent:
                del unsent[: os.write(fd, unsent)]
        except OSError:
            self._has_output.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, nursery.cancel_scope)
            try:
                await self._reader()
            finally:
                nursery.cancel_scope.cancel()

    async def _wait_until_taken(self) -> None:
        """Pause the reader until the writer has taken the queued output."""
        taken = self._taken
        if taken is None:
            taken = self._taken = trio.Event()
        self._has_output.set()  # the writer takes even if no dirty mark woke it
        await taken.wait()

    async def _wait_until_idle(self) -> None:
        """Wait until the writer has sent everything queued so far."""
        while self._has_output.is_set() or self.bytes_in_flight:
            idle = self._idle
            if idle is None:
                idle = self._idle = trio.Event()
            await idle.wait()

    async def _reader(self) -> None:
        server = self.server
        engine = server.engine
        conn_id = self.conn_id
        bound = server.reply_bound
        decoder = self.decoder
        receive_size = server.receive_size
        try:  # requests a live update handed over
            handed_over = decoder.feed(b"")
        except ProtocolError as exc:
            log.warning("conn %d: protocol error, closing connection: %s", conn_id, exc)
            return
        if handed_over and not await self._handle(handed_over):
            return
        while True:
            # Read nothing more while the replies already queued fill the
            # bound: the kernel's buffers then push back on the client.
            while engine.queued_replies(conn_id) >= bound:
                await self._wait_until_taken()
            try:
                data = await self._receive(receive_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("conn %d: receive failed: %s", conn_id, exc)
                return
            if not data:
                log.debug("conn %d: closed by peer", conn_id)
                return
            try:
                packets = decoder.feed(data)
            except ProtocolError as exc:
                log.warning("conn %d: protocol error, closing connection: %s", conn_id, exc)
                return
            if not packets:
                continue
            if not await self._handle(packets):
                return
            # Packets ahead of a bad header are returned first (C handles
            # them); the decoder keeps the error for after them.
            if decoder.error is not None:
                log.warning(
                    "conn %d: protocol error, closing connection: %s", conn_id, decoder.error
                )
                with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
                    await self._wait_until_idle()  # their replies, as C would send them
                return

    async def _handle(self, packets: Sequence[Packet]) -> bool:
        """Hand ``packets`` to the engine in batches that fit the reply bound;
        False if the connection must close."""
        server = self.server
        engine = server.engine
        conn_id = self.conn_id
        bound = server.reply_bound
        start = 0
        count = len(packets)
        while start < count:
            self.backlog = packets[start:]
            room = bound - engine.queued_replies(conn_id)
            if room <= 0:
                await self._wait_until_taken()
                continue
            end = start + room
            batch = packets if start == 0 and end >= count else packets[start:end]
            self.backlog = packets[end:]
            try:
                server.handle_batch(self, batch)
            except Exception:
                log.exception(
                    "conn %d: internal error while handling a request, closing connection",
                    conn_id,
                )
                return False
            start = end
        return True

    async def _receive(self, size: int) -> bytes:
        """Up to ``size`` bytes, b"" at end of stream. Like ``_send``, the
        bytes reach the decoder with no checkpoint after the system call
        (trio's ``recv`` has one), so a live update never loses them."""
        sock = self._socket
        if sock is None:
            return bytes(await self.stream.receive_some(size))
        fd = sock.fileno()
        # Before the read, with nothing in flight: a checkpoint, or, when the
        # last read emptied the socket (a client waiting for each reply),
        # straight to waiting, which is one and saves a read that would fail.
        if self._drained:
            await trio.lowlevel.wait_readable(fd)
        else:
            await trio.lowlevel.checkpoint()
        while True:
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(exc) from exc
            self._drained = len(data) < size
            return data

    async def _send(self) -> None:
        """Send ``unsent``, keeping exact count of what went, so that a live
        update at any moment hands over precisely the rest: the count is
        taken right after the system call, with no checkpoint in between
        (trio's own ``send`` has one)."""
        unsent = self.unsent
        sock = self._socket
        if sock is None:
            await self.stream.send_all(bytes(unsent))
            unsent.clear()
            return
        fd = sock.fileno()
        while unsent:
            try:
                sent = os.write(fd, unsent)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(exc) from exc
            del unsent[:sent]
            await trio.lowlevel.checkpoint()

    async def _writer(self, cancel_scope: trio.CancelScope) -> None:
        try:
            await self._send()  # what a live update handed over
            while True:
                if not self._has_output.is_set():
                    idle, self._idle = self._idle, None
                    if idle is not None:
                        idle.set()
                    self._writer_idle = True
                    try:
                        await self._has_output.wait()
                    finally:
                        self._writer_idle = False
                self._has_output = trio.Event()
                self._take_output()
                taken, self._taken = self._taken, None
                if taken is not None:
                    taken.set()
                if self.unsent:  # new output, or what an inline send left
                    await self._send()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("conn %d: send failed, closing connection: %s", self.conn_id, exc)
            cancel_scope.cancel()


class Server:
    """The engine plus every live connection; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        tracer: Tracer | None = None,
        reply_bound: int = DEFAULT_REPLY_BOUND,
        receive_size: int = RECEIVE_SIZE,
        state_dir: str | None = None,
        durable: DurableState | None = None,
    ) -> None:
        if reply_bound < 1:
            raise ValueError("reply_bound must be at least 1")
        self.engine = engine
        engine.live_update.check_binary = check_binary
        self.tracer = tracer if tracer is not None else Tracer()
        self.reply_bound = reply_bound
        self.receive_size = receive_size
        #: Where relative file names from CONTROL commands are placed.
        self.state_dir = state_dir
        self.connections: dict[int, Connection] = {}
        #: Guests' rings, when a Xen backend is available.
        self.rings: Rings | None = None
        self.socket_path: str | None = None
        self._cancel_scope: trio.CancelScope | None = None
        self._clock_wanted = trio.Event()
        #: The journal; None keeps the state in memory only (C's behaviour).
        self.durable = durable
        #: Rings' states to resume from (after a crash or a live update).
        self.restored_rings: dict[int, RingState] = (
            durable.restored_rings if durable is not None else {}
        )
        #: The listening socket's descriptor, handed over by a live update.
        self.listener_fd: int | None = None
        self._live_update: StartLiveUpdate | None = None
        self.live_updater = LiveUpdater(self)
        self._compaction_wanted = trio.Event()
        self._compaction_done = trio.Event()
        #: The pid file this process holds, which a live update passes on.
        self.pid_file: PidFile | None = None
        #: ``--no-fork``: a supervisor watches our pid (see server/anchor.py).
        self.foreground = False
        #: ``--event``: dom0's port when in a stub domain (rings re-attach with it).
        self.dom0_event: int | None = None

    # -- the synchronous core of the shell ------------------------------

    def handle_batch(self, conn: Connection, packets: Sequence[Packet]) -> None:
        """A socket connection's batch: count it, then ``handle_packets``."""
        try:
            self.handle_packets(conn.conn_id, packets)
        finally:
            conn.requests_handled += len(packets)

    def handle_packets(self, conn_id: int, packets: Sequence[Packet]) -> None:
        """Hand ``packets`` to the engine, then deliver output and run effects."""
        tracer = self.tracer
        if tracer.io:
            tracer.requests(conn_id, packets)
        self.engine.set_time(trio.current_time())
        handle = self.engine.handle
        try:
            for packet in packets:
                handle(conn_id, packet)
        finally:
            self.flush(conn_id)

    def flush(self, requester: int | None = None) -> None:
        """Deliver every connection's new output and apply the engine's effects.

        Effects go first: INTRODUCE's AttachRing must map a ring before output
        for it can be copied there. Ring output is then staged (its bytes
        copied, their indices not published), the batch's journal record is
        written, and only then do the rings' indices move and socket output
        leave: no reply leaves before the change it acknowledges is recorded
        (DESIGN.md invariant 1), and no request leaves a ring before the
        journal knows it was taken. The ``requester``'s replies leave first:
        its next request can then come while the events still go out.
        """
        effects = self.engine.take_effects()
        if effects:
            for effect in effects:
                self.apply_effect(effect)
        connections = self.connections
        rings = self.rings
        sockets: list[Connection] = []
        for conn_id in self.engine.take_dirty():
            conn = connections.get(conn_id)
            if conn is None:
                if rings is not None:
                    rings.write_output(conn_id)
            elif conn_id == requester:
                sockets.insert(0, conn)
            else:
                sockets.append(conn)
        durable = self.durable
        if durable is not None:
            durable.record(self.engine, rings.take_states() if rings is not None else None)
            if durable.compaction_due() and not self.live_updater.active:
                self._compaction_wanted.set()
        if rings is not None:
            rings.publish()
        for conn in sockets:
            conn.deliver_output()
        if self.tracer.is_open:
            self.tracer.flush()
        start, self._live_update = self._live_update, None
        if start is not None:
            self.live_updater.request(start)
            if not self.live_updater.active:  # refused at once: send the answer
                self.flush()

    def release_pid_file(self) -> None:
        """A live update's new instance takes the pid file (lock and pid)."""
        if self.pid_file is not None:
            self.pid_file.close()

    def reacquire_pid_file(self) -> None:
        """The update failed: the pid file is ours again."""
        if self.pid_file is not None and not self.pid_file.acquire():
            log.error("could not take the pid file %s back", self.pid_file.path)

    def resolve_path(self, path: str) -> str:
        """A file name from a CONTROL command; relative ones go under the state dir."""
        if os.path.isabs(path) or self.state_dir is None:
            return os.path.abspath(path)
        return os.path.join(self.state_dir, path)

    def apply_effect(self, effect: Effect) -> None:
        tracer = self.tracer
        if isinstance(effect, LogMessage):
            log.info("%s", effect.text)
            if tracer.is_open:
                tracer.line(effect.text)
        elif isinstance(effect, TraceFile):
            if effect.path is None:
                tracer.close()
                log.info("tracing stopped")
            else:
                tracer.open(self.resolve_path(effect.path))
        elif isinstance(effect, TraceSwitches):
            tracer.set_switches(effect.enabled)
        elif isinstance(effect, MemoryReport):
            if effect.path is None:
                if tracer.is_open:
                    tracer.text(effect.text)
                else:
                    log.warning("memory report requested but no trace file is open")
            else:
                self._write_report(self.resolve_path(effect.path), effect.text)
        elif isinstance(effect, StartLiveUpdate):
            self._live_update = effect  # once this flush is done
        elif isinstance(effect, (AttachRing, ResetRing, DetachRing)) and self.rings is not None:
            self.rings.apply(effect)
        elif isinstance(effect, AttachRing):
            # Without a Xen backend no ring can be mapped: C's INTRODUCE would
            # fail to map it; here the domain is kept with its ring ignored
            # (error COMM, spec 7.5), so RELEASE and @releaseDomain still work.
            log.warning(
                "domain %d introduced, but there is no Xen backend to attach its ring",
                effect.domid,
            )
            self.engine.ignore_connection(effect.conn_id)
        elif isinstance(effect, (ResetRing, DetachRing)):
            pass  # nothing was attached
        else:  # pragma: no cover - a new effect type the shell does not know yet
            log.warning("ignoring unknown engine effect %r", effect)

    @staticmethod
    def _write_report(path: str, text: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            log.error("could not write memory report to %s: %s", path, exc)

    # -- tasks -----------------------------------------------------------

    def open_connection(
        self, stream: trio.abc.Stream, adopted: tuple[int, bytes, bytes] | None = None
    ) -> Connection:
        """Register a client at once, before its task runs: a live update
        between the two must find it and hand it over."""
        conn_id = self.engine.connect_socket() if adopted is None else adopted[0]
        conn = Connection(self, conn_id, stream)
        if adopted is not None:
            conn.decoder = Decoder(adopted[1])
            conn.unsent += adopted[2]
            conn.deliver_output()  # its queued output (the requester's OK, events)
        self.connections[conn_id] = conn
        return conn

    async def serve_connection(self, conn: Connection) -> None:
        """Serve one client (registered by ``open_connection``; ``adopted``
        there: a connection a live update handed over, with its input not
        yet handled and output not yet sent) until it disconnects or breaks
        the protocol. Never raises (except Cancelled): a broken client must
        not take the daemon down. The stream is closed on return."""
        engine = self.engine
        conn_id = conn.conn_id
        stream = conn.stream
        tracer = self.tracer
        if log.isEnabledFor(logging.DEBUG) or tracer.obj:
            peer = _peer_description(stream)
            log.debug("conn %d: opened%s", conn_id, f" ({peer})" if peer else "")
            if tracer.obj:
                tracer.connection("NEW", conn_id, peer)
                tracer.flush()
        try:
            await conn.run()
        except Exception:
            log.exception("conn %d: unexpected error, closing connection", conn_id)
        finally:
            del self.connections[conn_id]
            try:
                engine.disconnect(conn_id)
                self.flush()
            except Exception:
                log.exception("conn %d: error while disconnecting", conn_id)
            if tracer.obj:
                tracer.connection("END", conn_id)
                tracer.flush()
            log.debug("conn %d: closed", conn_id)
            await trio.aclose_forcefully(stream)

    async def serve_listener(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        *,
        adopted: dict[int, tuple[trio.SocketStream, bytes, bytes]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept clients until cancelled, each in its own task.

        Cancelling stops accepting, closes the listener and every
        connection (each is disconnected from the engine).
        """
        async with listener, trio.open_nursery() as nursery:
            for conn_id, (handed, unhandled, unsent) in (adopted or {}).items():
                conn = self.open_connection(handed, (conn_id, unhandled, unsent))
                nursery.start_soon(self.serve_connection, conn)
            task_status.started()
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    log.error("accept failed (%s), retrying", os.strerror(exc.errno or 0))
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                    continue
                nursery.start_soon(self.serve_connection, self.open_connection(stream))

    def want_clock(self) -> None:
        """A guest left output unread: expiry ticks are needed until it is gone."""
        self._clock_wanted.set()

    async def run_clock(self) -> None:
        """Expire guests' unread events once a second, but only while some wait:
        an idle daemon does not wake up (spec 5.7)."""
        engine = self.engine
        while True:
            engine.expire_events(trio.current_time())
            if engine.guest_output_waiting():
                await trio.sleep(CLOCK_PERIOD)
            else:
                self._clock_wanted = trio.Event()
                await self._clock_wanted.wait()

    async def run_compaction(self) -> None:
        """Write a snapshot whenever the journal has grown enough (see persist)."""
        durable = self.durable
        assert durable is not None
        while True:
            await self._compaction_wanted.wait()
            self._compaction_wanted = trio.Event()
            if self.live_updater.active:
                continue  # the new instance reads the files: none may go
            durable.start_compaction(self.engine)
            pid = durable.compacting
            assert pid is not None
            _, status = await trio.to_thread.run_sync(os.waitpid, pid, 0)
            durable.finish_compaction(durable.compacting_seq, status)
            self._compaction_done.set()
            self._compaction_done = trio.Event()

    async def wait_for_compaction(self) -> None:
        """Until no snapshot writer runs (a live update starts none meanwhile)."""
        durable = self.durable
        while durable is not None and durable.compacting is not None:
            await self._compaction_done.wait()

    def shutdown(self) -> None:
        """Make ``serve`` return: stop accepting and close every connection."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    @property
    def connection_count(self) -> int:
        return len(self.connections)


async def serve(
    config: Config,
    socket_path: str,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    engine: Engine | None = None,
    tracer: Tracer | None = None,
    state_dir: str | None = None,
    reply_bound: int | None = None,
    socket_mode: int = 0o600,
    xen: XenBackend | None = None,
    durable: DurableState | None = None,
    adopted: Adopted | None = None,
) -> None:
    """Run the daemon on the Unix socket ``socket_path`` until cancelled.

    ``adopted``: what a live update handed over (the listening socket,
    socket connections, rings' states) to serve instead of binding afresh.

    With ``xen``, guests' rings are served too (``server.rings``); the caller
    keeps ownership of the backend's handles.

    Calls ``task_status.started(server)`` once the socket is listening, so
    ``server = await nursery.start(serve, config, path)`` is race-free.
    ``Server.shutdown()`` or cancelling the caller's scope stops it: the
    listener and every connection are closed, and the socket file is
    removed if it is still ours.
    """
    if engine is None:
        engine = Engine(config, xen)
    if tracer is None:
        tracer = Tracer(config.trace_file, config.trace_switches)
    server = Server(
        engine,
        tracer=tracer,
        reply_bound=reply_bound if reply_bound is not None else reply_bound_for(config),
        state_dir=state_dir,
        durable=durable,
    )
    if adopted is None:
        listener, bound = open_unix_listener(socket_path, mode=socket_mode)
    else:
        listener, bound = adopt_unix_listener(adopted.listener_fd, socket_path)
        server.restored_rings = adopted.rings
    server.listener_fd = listener.socket.fileno()
    server.socket_path = socket_path
    try:
        with trio.CancelScope() as scope:
            server._cancel_scope = scope
            log.info("listening on %s", socket_path)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.run_clock)
                nursery.start_soon(server.live_updater.run)
                if durable is not None:
                    nursery.start_soon(server.run_compaction)
                    if durable.compaction_due():  # what recovery replayed
                        server._compaction_wanted.set()
                if xen is not None:
                    server.dom0_event = xen.dom0_event
                    server.rings = Rings(server, xen)
                    server.rings.attach_local(xen.dom0_event)
                    server.rings.discover()
                    nursery.start_soon(server.rings.run)
                await nursery.start(
                    functools.partial(
                        server.serve_listener,
                        listener,
                        adopted=adopted.sockets if adopted is not None else None,
                    )
                )
                task_status.started(server)
        log.info("stopped listening on %s", socket_path)
    finally:
        if server.rings is not None:
            server.rings.close()
            server.rings = None
        server._cancel_scope = None
        listener.socket.close()
        remove_socket(bound)
