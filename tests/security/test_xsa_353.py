"""XSA-353 (CVE-2020-29479): oxenstored skipped permission checks on the root
node ``/``.

Attack: an unprivileged guest operates on ``/``: SET_PERMS (to open the whole
store), WRITE (to change the root's value), MKDIR, RM (to delete the
store), DIRECTORY and GET_PERMS (to list or inspect it), READ; and dom0
tries RM ``/``.

Expected (spec 1.5, 3.2): the root is ``n0``: every one of these from a guest
is EACCES (MKDIR of an existing node needs WRITE too), directly and in a
transaction; RM of ``/`` is EINVAL even for dom0; the root is unchanged.

Layer: the pure engine.
"""

from __future__ import annotations

import pytest
from engine_harness import World

from pyxenstored.protocol.ops import Op

GUEST_OPS = [
    (Op.SET_PERMS, ("/", "b5")),
    (Op.SET_PERMS, ("/", "n5")),
    (Op.WRITE, ("/", "pwned")),
    (Op.MKDIR, ("/",)),
    (Op.RM, ("/",)),
    (Op.DIRECTORY, ("/",)),
    (Op.DIRECTORY_PART, ("/", "0")),
    (Op.GET_PERMS, ("/",)),
    (Op.READ, ("/",)),
]


@pytest.mark.parametrize(("op", "args"), GUEST_OPS, ids=lambda v: str(v))
@pytest.mark.parametrize("in_tx", [False, True], ids=["direct", "in-tx"])
def test_guest_gets_eacces_on_root(world: World, op: int, args: tuple[str, ...],
                                   in_tx: bool) -> None:
    h = world.h
    before = (h.perms(world.dom0, "/"), h.read(world.dom0, "/"), h.directory(world.dom0, "/"))
    tx = h.start(world.g5) if in_tx else 0
    assert world.outcome("g5", op, *args, tx=tx) == "EACCES"
    if in_tx:
        assert h.end(world.g5, tx) == "OK"
    after = (h.perms(world.dom0, "/"), h.read(world.dom0, "/"), h.directory(world.dom0, "/"))
    assert after == before == (["n0"], b"", before[2])
    assert "local" in before[2]


def test_rm_root_is_einval_even_for_dom0(world: World) -> None:
    h = world.h
    assert h.err(world.dom0, Op.RM, "/") == "EINVAL"
    tx = h.start(world.dom0)
    assert h.err(world.dom0, Op.RM, "/", tx=tx) == "EINVAL"
    assert h.end(world.dom0, tx) == "OK"
    assert "local" in h.directory(world.dom0, "/")
    assert h.consistent() == []


def test_guest_cannot_open_root_through_a_readable_child(world: World) -> None:
    """Read access to /pub gives nothing on its parent /."""
    h = world.h
    assert h.read(world.g5, "/pub") == b"p"
    assert h.err(world.g5, Op.DIRECTORY, "/") == "EACCES"
    assert h.write(world.g5, "/newtop", b"x") == (16, b"EACCES\0")
    assert h.err(world.dom0, Op.READ, "/newtop") == "ENOENT"
