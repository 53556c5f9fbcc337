"""The trace file (``-T``): one line per request in and per reply or event out.

Lines look like::

    2025-11-25 11:03:00.123456 IN  conn 3 READ req 7 tx 0 "/local/domain/0/name\\0"
    2025-11-25 11:03:00.123501 OUT conn 3 READ req 7 tx 0 "Domain-0"

The payload is quoted with NULs shown as ``\\0``, and ``"``, ``\\`` and
non-printable bytes escaped. Like C's trace switches (``--trace-control``),
``io`` gates the IN/OUT lines and ``obj`` the connection open/close lines.

Tracing costs nothing when off: callers test ``Tracer.io`` (a plain
attribute) once per batch before building any line.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from typing import Final, TextIO

from pyxenstored.config import DEFAULT_TRACE_SWITCHES, TRACE_SWITCHES
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.ops import TYPE_COUNT, Op
from pyxenstored.protocol.wire import Packet

log = logging.getLogger(__name__)

_OP_NAMES: Final = tuple(Op(i).name for i in range(TYPE_COUNT))


def _escape_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for byte in range(256):
        if byte == 0:
            table[byte] = "\\0"
        elif byte == 0x22:
            table[byte] = '\\"'
        elif byte == 0x5C:
            table[byte] = "\\\\"
        elif 0x20 <= byte < 0x7F:
            continue
        else:
            table[byte] = f"\\x{byte:02x}"
    return table


_ESCAPES: Final = _escape_table()


def op_name(type_: int) -> str:
    """The message type's name, or ``TYPE_<n>`` for one outside the table."""
    if 0 <= type_ < TYPE_COUNT:
        return _OP_NAMES[type_]
    return f"TYPE_{type_}"


def quote_payload(payload: bytes) -> str:
    """A payload as a double-quoted, printable string."""
    return '"' + payload.decode("latin-1").translate(_ESCAPES) + '"'


def format_packet(direction: str, conn_id: int, packet: Packet) -> str:
    """One trace line without timestamp; ``direction`` is ``IN`` or ``OUT``."""
    return (
        f"{direction:<3} conn {conn_id} {op_name(packet.type)} req {packet.req_id} "
        f"tx {packet.tx_id} {quote_payload(packet.payload)}"
    )


class Tracer:
    """The optional trace file and its switches.

    ``io`` and ``obj`` are True only while a file is open *and* the switch is
    on, so the hot path needs a single attribute test.
    """

    def __init__(
        self,
        path: str | None = None,
        switches: Iterable[str] = DEFAULT_TRACE_SWITCHES,
    ) -> None:
        self.path: str | None = path
        self.switches: set[str] = set(switches)
        self._file: TextIO | None = None
        self.io = False
        self.obj = False
        if path is not None:
            self.open(path)

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def _update(self) -> None:
        is_open = self._file is not None
        self.io = is_open and "io" in self.switches
        self.obj = is_open and "obj" in self.switches

    def set_switch(self, name: str, on: bool) -> None:
        if name not in TRACE_SWITCHES:
            raise ValueError(f"unknown trace switch {name!r}")
        if on:
            self.switches.add(name)
        else:
            self.switches.discard(name)
        self._update()

    def set_switches(self, names: Iterable[str]) -> None:
        """Exactly ``names`` on (unknown names are ignored)."""
        self.switches = {name for name in names if name in TRACE_SWITCHES}
        self._update()

    def open(self, path: str) -> bool:
        """(Re)open ``path`` for appending, mode 0600; False if that failed.

        On failure tracing stays off, as C's ``reopen_log`` leaves it.
        """
        self.close()
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.error("could not open trace file %s: %s", path, exc)
            return False
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
        self._update()
        self._file.write("\n***\n")
        self._file.flush()
        log.info("tracing to %s", path)
        return True

    def reopen(self) -> None:
        """Reopen the current path (SIGHUP, CONTROL ``log on``), for log rotation."""
        if self.path is not None:
            self.open(self.path)

    def close(self) -> None:
        file, self._file = self._file, None
        self._update()
        if file is not None:
            try:
                file.close()
            except OSError as exc:
                log.warning("closing trace file %s: %s", self.path, exc)

    # -- writing -------------------------------------------------------

    def _write(self, text: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(text)
        except OSError as exc:
            log.error("writing trace file %s failed, tracing stopped: %s", self.path, exc)
            self.close()

    @staticmethod
    def _now() -> str:
        return datetime.datetime.now().isoformat(sep=" ", timespec="microseconds")

    def line(self, text: str) -> None:
        """A free-form line (control ``print``, a memory report's header)."""
        self._write(f"{self._now()} {text}\n")

    def text(self, text: str) -> None:
        """Verbatim text (a memory report)."""
        self._write(text if text.endswith("\n") else text + "\n")

    def requests(self, conn_id: int, packets: Iterable[Packet]) -> None:
        now = self._now()
        self._write(
            "".join(f"{now} {format_packet('IN', conn_id, packet)}\n" for packet in packets)
        )

    def output(self, conn_id: int, data: bytes, decoder: Decoder) -> None:
        """Trace the replies and events in one chunk of outgoing bytes."""
        try:
            packets = decoder.feed(data)
        except ProtocolError as exc:  # the engine never encodes one; keep going anyway
            self.line(f"OUT conn {conn_id} undecodable output: {exc}")
            return
        now = self._now()
        self._write(
            "".join(f"{now} {format_packet('OUT', conn_id, packet)}\n" for packet in packets)
        )

    def connection(self, event: str, conn_id: int, peer: str = "") -> None:
        """``obj`` lines: a connection was created or destroyed."""
        self.line(f"{event} conn {conn_id}{' ' + peer if peer else ''}")

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                log.error("writing trace file %s failed, tracing stopped: %s", self.path, exc)
                self.close()
