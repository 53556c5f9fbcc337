"""Running the daemon process: detach, pid file, signals, clean shutdown."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

import trio

from pyxenstored.engine import Engine
from pyxenstored.persist.durable import DurableState
from pyxenstored.persist.files import Durability, JournalCorrupt
from pyxenstored.persist.image import ImageError
from pyxenstored.server.channel import ANCHOR_ENV
from pyxenstored.server.daemon import Server, serve
from pyxenstored.server.options import DaemonOptions
from pyxenstored.server.process import (
    ALREADY_RUNNING,
    READY,
    PidFile,
    daemonize,
    ensure_state_dir,
    notify_systemd,
    redirect_stdio,
    report,
)
from pyxenstored.server.rings import open_xen
from pyxenstored.server.takeover import Adopted, NoChannel, Takeover, open_channel
from pyxenstored.server.trace import Tracer

log = logging.getLogger("pyxenstored.server")

#: Signals that stop the daemon cleanly; SIGHUP reopens the trace file (as C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

E = TypeVar("E", bound=BaseException)


async def run_async(
    options: DaemonOptions,
    *,
    on_ready: Callable[[Server], None] | None = None,
    pid_file: PidFile | None = None,
    takeover: Takeover | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then close everything and return.

    Must run in the main thread (it installs signal handlers).
    ``on_ready`` is called once the socket is listening. ``takeover``: a
    live update to take part in (``-U``); ``pid_file`` is then taken once
    the old instance lets go of it.
    """
    tracer = Tracer(options.config.trace_file, options.config.trace_switches)
    xen = open_xen(options.event_port)
    engine = Engine(options.config, xen)
    engine.set_time(trio.current_time())  # restored watches' events are queued now
    adopted: Adopted | None = None
    durable: DurableState | None = None
    if takeover is not None:
        # The anchor forwards stop signals to us from ``finish`` on, before
        # the receiver below exists: held until then, not fatal meanwhile.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            takeover.preload(engine)
            adopted = takeover.receive(engine, trio.current_time())

            def finish() -> None:
                nonlocal durable
                if options.durability is not Durability.NONE:
                    durable = DurableState.take_over(
                        engine, options.state_dir, options.durability, adopted.rings)
                if pid_file is not None and not pid_file.acquire():
                    raise OSError(f"the pid file {pid_file.path} is held by another process")
                announce_to_anchor()

            takeover.commit(finish)
        except BaseException as exc:
            takeover.fail(exc)
            if durable is not None:
                durable.close()
            raise
        log.info("live update: took over %d connections", len(engine.connections))
    else:
        durable = recover(engine, options)
    try:
        with trio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            async with trio.open_nursery() as nursery:
                server: Server = await nursery.start(
                    functools.partial(
                        serve,
                        options.config,
                        options.socket_path,
                        tracer=tracer,
                        state_dir=options.state_dir,
                        xen=xen,
                        engine=engine,
                        durable=durable,
                        adopted=adopted,
                    )
                )
                server.pid_file = pid_file
                server.foreground = options.no_fork
                if on_ready is not None:
                    on_ready(server)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: reopening the trace file")
                        tracer.reopen()
                        continue
                    log.info("%s received, shutting down", signal.Signals(signum).name)
                    server.shutdown()
                    break
    finally:
        tracer.close()
        if durable is not None:
            durable.close()
        if xen is not None:
            xen.close()
    log.info("shut down")


def announce_to_anchor() -> None:
    """Tell the ``--no-fork`` anchor (server/anchor.py), if there is one,
    that this process is now the daemon."""
    fd = os.environ.get(ANCHOR_ENV)
    if fd is not None:
        os.write(int(fd), f"{os.getpid()}\n".encode())


def recover(engine: Engine, options: DaemonOptions) -> DurableState | None:
    """Restore the state directory's store into ``engine`` (issue 5)."""
    if options.durability is Durability.NONE:
        log.info("durability none: the store lives in memory only")
        return None
    durable, recovery = DurableState.recover(
        engine, options.state_dir, options.durability, options.recover_truncate
    )
    for note in recovery.notes:
        log.warning("%s", note)
    log.info("%s (%s)", recovery.describe(), options.state_dir)
    return durable


def _find(exc: BaseException, kind: type[E] | tuple[type[E], ...]) -> E | None:
    """``exc`` itself or the first ``kind`` inside an exception group."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def run(options: DaemonOptions) -> int:
    """The whole life of the daemon process; returns its exit status."""
    try:
        ensure_state_dir(options.state_dir)
    except OSError as exc:
        log.critical("cannot create state dir %s: %s", options.state_dir, exc)
        return 1
    if os.path.dirname(options.socket_path) == options.run_dir:
        try:  # C: "Errors ignored here, will be reported when we open files"
            os.mkdir(options.run_dir, 0o755)
        except OSError:
            pass
    takeover: Takeover | None = None
    if options.live_update:
        try:
            channel = open_channel()
        except NoChannel as exc:
            log.critical("%s", exc)
            return 1
        state_dir = None if options.durability is Durability.NONE else options.state_dir
        takeover = Takeover(state_dir, channel)
    ready_fd: int | None = None
    if not options.no_fork and not options.live_update:  # C does not fork with -U
        ready_fd = daemonize()
    pid_file: PidFile | None = None
    if options.pid_file is not None:
        pid_file = PidFile(options.pid_file)
    if pid_file is not None and takeover is None:
        try:
            acquired = pid_file.acquire()
        except OSError as exc:
            log.critical("cannot open pid file %s: %s", options.pid_file, exc)
            return 1
        if not acquired:  # C: "We exit silently if daemon already running."
            report(ready_fd, ALREADY_RUNNING)
            return 0

    def ready(server: Server) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            redirect_stdio()
            report(ready_fd, READY)
            ready_fd = None
        notify_systemd()

    try:
        trio.run(functools.partial(run_async, options, on_ready=ready, pid_file=pid_file,
                                   takeover=takeover))
    except BaseException as exc:
        if _find(exc, KeyboardInterrupt) is not None:  # before the receiver was installed
            log.info("interrupted")
            return 130
        damaged = _find(exc, (JournalCorrupt, ImageError))
        if damaged is not None:
            log.critical("cannot restore the store: %s", damaged)
            return 1
        os_error = _find(exc, OSError)
        if os_error is not None:
            log.critical("%s", os_error)
            return 1
        if isinstance(exc, Exception):
            log.critical("unexpected error", exc_info=True)
            return 1
        raise
    finally:
        if pid_file is not None:
            pid_file.release()
        if ready_fd is not None:  # never got ready: the parent sees EOF and exits 1
            report(ready_fd, b"")
        sys.stdout.flush()
    return 0
