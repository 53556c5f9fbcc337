"""A one-line text progress bar on stderr (no dependency).

On a terminal the line is redrawn in place; elsewhere (a log file, CI) a
plain line is printed at every tenth of the run and at the end, so that a
captured stderr stays short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """``cycle i/N [#####-----] elapsed  failures F  note``."""

    def __init__(
        self,
        total: int,
        *,
        label: str = "cycle",
        stream: TextIO | None = None,
        width: int = 30,
        enabled: bool = True,
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.started = time.monotonic()
        self._tty = self.stream.isatty()
        self._last_decile = -1
        self._drawn = 0

    def render(self, done: int, failures: int, note: str = "") -> str:
        filled = self.width * min(done, self.total) // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = format_elapsed(time.monotonic() - self.started)
        line = f"{self.label} {done}/{self.total} [{bar}] {elapsed}  failures {failures}"
        return f"{line}  {note}" if note else line

    def update(self, done: int, failures: int, note: str = "") -> None:
        if not self.enabled:
            return
        line = self.render(done, failures, note)
        if self._tty:
            pad = max(self._drawn - len(line), 0)
            self.stream.write("\r" + line + " " * pad)
            self._drawn = len(line)
        else:
            decile = 10 * done // self.total
            if decile == self._last_decile and done < self.total:
                return
            self._last_decile = decile
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the line (on a terminal) so that later output starts afresh."""
        if self.enabled and self._tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0
