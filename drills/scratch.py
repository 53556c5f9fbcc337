"""A drill's scratch directory, and its stand-in daemon in it: made and kept
(or removed) the same way by both drills."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from drills import fakexen
from drills.aborting import DrillAborted
from drills.daemon import DaemonDied, DaemonProcess


def make_workdir(given: Path | None, prefix: str) -> Path:
    """``given`` (created if need be), else a fresh directory under /tmp, whose
    paths stay short enough for Unix sockets (108 bytes)."""
    if given is not None:
        workdir = Path(given)
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def keep_or_remove(workdir: Path | None, keep: bool) -> str | None:
    """The path to report when the directory is kept (asked for, or a failure
    to look into); otherwise it is removed and there is nothing to report."""
    if workdir is None:
        return None
    if keep:
        return str(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return None


def daemon_in(workdir: Path, library: Path, fakexen_dir: Path, durability: str) -> DaemonProcess:
    """pyxenstored under the stand-in, its socket, state and log in ``workdir/run``."""
    return DaemonProcess(
        library=library,
        fakexen_dir=fakexen_dir,
        run_dir=workdir / "run",
        durability=durability,
        cwd=fakexen.REPO,
    )


async def start(daemon: DaemonProcess) -> None:
    """Start the daemon and wait for its first reply; a drill cannot go on without."""
    daemon.start()
    try:
        await daemon.wait_ready()
    except DaemonDied as exc:
        raise DrillAborted(f"pyxenstored did not start: {exc}") from exc


def stop(daemon: DaemonProcess) -> str | None:
    """SIGTERM the daemon at the end of a run; the finding when it did not
    exit cleanly (worth one only when the run did not abort already)."""
    status = daemon.stop()
    if status not in (None, 0):
        return f"pyxenstored did not stop cleanly on SIGTERM (status {status})"
    return None
