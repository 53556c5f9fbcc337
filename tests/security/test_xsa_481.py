"""XSA-481 (CVE-2026-23555): paths like ``/local/domain/`` reached an assert
on errno 0 in C's path checks, killing the daemon.

Attack: every path-taking request, from dom0 and from guests (1- and
5-digit domids), in and out of a transaction, with ``/local/domain/``,
``/local/domain/x/``, ``/local/domain/12345/``, their relative forms
(``local/domain/``, ``x/``, the empty path) and ``/local/domain/99999/a``.

Expected: malformed forms (trailing ``/``, empty) are EINVAL for every
operation and caller, the connection keeps working, nothing is created,
and the daemon stays up. ``/local/domain/99999/a`` is well formed (C's
``sscanf("%5u")`` reads a five-digit domid and measures path-max after it):
it gets an ordinary answer (ENOENT for dom0's READ, EACCES for a guest),
never a crash. (The spec table lists it under "→ EINVAL"; C's
``is_valid_nodename`` accepts it, and the project follows C; see
tests/engine/test_engine_bad_input.py.)

Layer: the pure engine.
"""

from __future__ import annotations

import pytest
from engine_harness import ERROR, Harness, nul_args
from security_support import make_home

from pyxenstored.protocol.ops import Op

MALFORMED = [
    "/local/domain/",
    "/local/domain/x/",
    "/local/domain/12345/",
    "/local/domain/5/",
    "local/domain/",
    "x/",
    "",
]
OPS: list[tuple[int, tuple[str, ...]]] = [
    (Op.READ, ()),
    (Op.DIRECTORY, ()),
    (Op.DIRECTORY_PART, ("0",)),
    (Op.GET_PERMS, ()),
    (Op.MKDIR, ()),
    (Op.RM, ()),
    (Op.SET_PERMS, ("n0",)),
    (Op.WATCH, ("tok",)),
    (Op.UNWATCH, ("tok",)),
]


def _send(h: Harness, conn: int, op: int, path: str, tail: tuple[str, ...], tx: int) -> bytes:
    if op == Op.WRITE:
        payload = path.encode() + b"\0v"
    else:
        payload = nul_args(path, *tail)
    type_, reply = h.raw(conn, op, payload, tx=tx if op not in (Op.WATCH, Op.UNWATCH) else 0)
    assert type_ == ERROR, (op, path, reply)
    return reply


@pytest.mark.parametrize("in_tx", [False, True], ids=["direct", "in-tx"])
@pytest.mark.parametrize("domid", [None, 5, 12345], ids=["dom0", "guest5", "guest12345"])
def test_malformed_local_domain_paths_are_einval(h: Harness, domid: int | None,
                                                 in_tx: bool) -> None:
    conn = h.dom0 if domid is None else make_home(h, domid)
    before = sorted(h.engine.tree.nodes)
    tx = h.start(conn) if in_tx else 0
    for path in MALFORMED:
        for op, tail in [*OPS, (Op.WRITE, ())]:
            assert _send(h, conn, op, path, tail, tx) == b"EINVAL\0", (op, path)
    if in_tx:
        assert h.end(conn, tx) == "OK"  # the transaction was not poisoned
    assert sorted(h.engine.tree.nodes) == before
    assert h.engine.connections[conn].watches == {}
    h.write_ok(conn, "/local/domain/5/ok" if domid in (None, 5) else "ok", b"fine")
    assert h.consistent() == []


def test_five_digit_domid_path_is_ordinary(h: Harness) -> None:
    guest = make_home(h, 5)
    assert h.err(h.dom0, Op.READ, "/local/domain/99999/a") == "ENOENT"
    assert h.err(guest, Op.READ, "/local/domain/99999/a") == "EACCES"
    assert h.write(guest, "/local/domain/99999/a", b"v")[1] == b"EACCES\0"
    h.ok(guest, Op.WATCH, "/local/domain/99999/a", "w")
    h.write_ok(h.dom0, "/local/domain/99999/a", b"v")
    assert h.read(h.dom0, "/local/domain/99999/a") == b"v"
    assert h.consistent() == []
