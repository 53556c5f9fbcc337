"""When a drill gives up: ``DrillAborted``, and the guard that turns whatever
makes going on pointless into it (shared, so both drills abort alike)."""

from __future__ import annotations

from collections.abc import Awaitable

import trio

from pyxenstored.client import ConnectionClosed, XenstoreError


class DrillAborted(Exception):
    """The drill cannot go on (the daemon died or did not come back, a step broke)."""


#: What ends the drill when a step raises it (a connection that should be
#: fine broke, the daemon answered an error where none can come).
ABORTING = (DrillAborted, ConnectionClosed, XenstoreError, OSError, trio.TooSlowError)


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) groups: the one that names the cause."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def guarded(step: Awaitable[None]) -> None:
    """Run a step; what makes going on pointless becomes ``DrillAborted``
    (trio wraps exceptions from nursery bodies in groups: unwrap them)."""
    try:
        await step
    except* ABORTING as group:
        problem = first_leaf(group)
        if isinstance(problem, DrillAborted):
            raise problem from None
        raise DrillAborted(f"{type(problem).__name__}: {problem}") from problem
