"""CONTROL live-update: the session of spec 8.1 with C's answer texts."""

from __future__ import annotations

import pytest
from engine_harness import Harness

from pyxenstored.effects import StartLiveUpdate
from pyxenstored.protocol.ops import Op


@pytest.fixture
def lu(h: Harness) -> Harness:
    def check(path: str) -> str | None:
        return None if path == "/new" else "File not accessible."

    h.engine.live_update.check_binary = check
    return h


def text(h: Harness, conn: int, *args: str) -> str:
    return h.ok(conn, Op.CONTROL, "live-update", *args).rstrip(b"\0").decode()


def test_a_whole_session(lu: Harness) -> None:
    assert text(lu, lu.dom0, "-f", "/new") == "OK"
    assert text(lu, lu.dom0, "-c", "--no-fork --socket /s") == "OK"
    lu.send(lu.dom0, Op.CONTROL, b"live-update\0-s\0-t\0" + b"60\0-F\0")
    # No reply: the new instance (or the failure path) gives it.
    assert lu.drain(lu.dom0) == []
    effects = [e for e in lu.engine.take_effects() if isinstance(e, StartLiveUpdate)]
    assert len(effects) == 1
    start = effects[0]
    assert (start.conn_id, start.binary) == (lu.dom0, "/new")
    assert start.cmdline == "--no-fork --socket /s"
    lu.engine.live_update_failed(start, "Error activating new binary.")
    replies = lu.drain(lu.dom0)
    assert [(p.type, p.req_id, p.payload) for p in replies] == [
        (Op.CONTROL, start.req_id, b"Error activating new binary.\0")
    ]
    assert text(lu, lu.dom0, "-a") == "No live-update session active."


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (("-f", "/missing"), "File not accessible."),
        (("-a",), "No live-update session active."),
        (("-c", "x"), "Not in live-update session."),
        (("-s",), "Not in live-update session."),
    ],
)
def test_answers_without_a_session(lu: Harness, args: tuple[str, ...], answer: str) -> None:
    assert text(lu, lu.dom0, *args) == answer


@pytest.mark.parametrize("args", [(), ("-x",), ("-a", "extra"), ("-c",), ("-s", "-t"),
                                  ("-s", "-q", "1"), ("-b", "100"), ("-f",)])
def test_malformed_steps_are_einval(lu: Harness, args: tuple[str, ...]) -> None:
    assert lu.err(lu.dom0, Op.CONTROL, "live-update", *args) == "EINVAL"


def test_one_session_bound_to_its_connection(lu: Harness) -> None:
    other = lu.engine.connect_socket()
    assert text(lu, lu.dom0, "-f", "/new") == "OK"
    assert text(lu, other, "-f", "/new") == "live-update session already active."
    assert text(lu, other, "-s") == "Not in live-update session."
    assert text(lu, lu.dom0, "-s", "-v", "3") == "Migration stream version not supported."
    lu.engine.disconnect(lu.dom0)  # the session dies with its connection
    assert text(lu, other, "-f", "/new") == "OK"


def test_guests_may_not(lu: Harness) -> None:
    lu.write_ok(lu.dom0, "/local/domain/5", b"")
    guest = lu.introduce(5)
    assert lu.err(guest, Op.CONTROL, "live-update", "-a") == "EACCES"
