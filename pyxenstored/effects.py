"""Side effects the pure engine asks the trio shell to carry out.

The engine never touches files or clocks; CONTROL commands such as ``print``
or ``logfile`` become one of these plain records, which the shell drains with
``Engine.take_effects()`` after each batch and performs.
"""

import attrs


@attrs.frozen
class LogMessage:
    """A line for the daemon log (CONTROL ``print``, soft-quota warnings)."""

    text: str


@attrs.frozen
class TraceFile:
    """Open ``path`` as the trace file, or close tracing when ``path`` is None."""

    path: str | None


@attrs.frozen
class TraceSwitches:
    """CONTROL ``log +sw``/``-sw``: exactly these trace switches are now on."""

    enabled: frozenset[str]


@attrs.frozen
class MemoryReport:
    """Write ``text`` to ``path``, or to the trace file when ``path`` is None."""

    path: str | None
    text: str


@attrs.frozen
class AttachRing:
    """INTRODUCE of a new domain: map its ring (grant 1) and bind ``port`` for ``conn_id``.

    A non-zero ``evtchn_port`` in the ring page overrides ``port`` (spec 1.5).
    """

    domid: int
    conn_id: int
    port: int


@attrs.frozen
class ResetRing:
    """INTRODUCE of a known domain: rebind to ``port`` and zero the ring indices."""

    domid: int
    conn_id: int
    port: int


@attrs.frozen
class DetachRing:
    """The domain was released or died: unbind its port and unmap its ring."""

    domid: int
    conn_id: int


@attrs.frozen
class StartLiveUpdate:
    """CONTROL ``live-update -s``: serialise the state and exec ``binary``; the
    request (``req_id``, ``tx_id`` on ``conn_id``) is answered by the new
    instance, or with an error text if the update fails."""

    conn_id: int
    req_id: int
    tx_id: int
    binary: str
    cmdline: str | None


Effect = (
    LogMessage
    | TraceFile
    | TraceSwitches
    | MemoryReport
    | AttachRing
    | ResetRing
    | DetachRing
    | StartLiveUpdate
)
