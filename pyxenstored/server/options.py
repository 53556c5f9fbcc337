"""What the command line tells the daemon process, beyond the engine's Config."""

from __future__ import annotations

from typing import Final

import attrs

from pyxenstored.config import Config
from pyxenstored.persist.files import Durability

#: Where the daemon keeps its journal and snapshots (``--state-dir``): on
#: tmpfs, because a store must not outlive a host reboot.
DEFAULT_STATE_DIR: Final = "/run/pyxenstored"
#: libxenstore's ``XEN_RUN_STORED``; the socket is ``<rundir>/socket``.
DEFAULT_RUN_DIR: Final = "/var/run/xenstored"


@attrs.define
class DaemonOptions:
    """Everything ``pyxenstored`` was started with.

    Paths are absolute: the daemon changes to ``/`` when it detaches.
    """

    config: Config = attrs.field(factory=Config)
    socket_path: str = DEFAULT_RUN_DIR + "/socket"
    #: ``$XENSTORED_RUNDIR``: created at start (errors ignored) as C does,
    #: when the socket is in it.
    run_dir: str = DEFAULT_RUN_DIR
    state_dir: str = DEFAULT_STATE_DIR
    #: ``-F``: written (and locked) after detaching, removed on exit.
    pid_file: str | None = None
    #: ``-N``: stay in the foreground.
    no_fork: bool = False
    #: ``--event``: in a stub domain, the port of dom0's ring (reached by grant).
    event_port: int | None = None
    #: ``-U``: started by a running pyxenstored's live update, to take over from it.
    live_update: bool = False
    #: ``-V``: debug logging.
    verbose: bool = False
    #: ``--durability``: what a journal record survives once acknowledged.
    durability: Durability = Durability.WRITE
    #: ``--recover=truncate``: start from the valid prefix of a damaged journal.
    recover_truncate: bool = False
