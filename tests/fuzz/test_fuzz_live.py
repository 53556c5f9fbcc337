"""Live fuzzing against a pyxenstored started by the harness (issue 4, part 4)."""

from __future__ import annotations

from pathlib import Path

from fuzz import live


def test_live_daemon_survives(tmp_path: Path) -> None:
    daemon = live.start_pyxenstored(tmp_path)
    try:
        answered = live.fuzz_socket(daemon.socket_path, 4.0, seed=1, daemon=daemon)  # type: ignore[attr-defined]
    finally:
        daemon.stop()  # type: ignore[attr-defined]
    assert answered > 0
