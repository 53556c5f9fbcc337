"""XSA-323 (CVE-2020-29482): the path length was checked against the wrong
base, so a guest could create a node whose absolute path dom0 could not use.

Attack: a guest with a 1- to 5-digit domid writes a relative path right at
the path-max limit (2048, measured on the part after
``/local/domain/<N>/``), and one byte over it, in relative and absolute form.

Expected (spec 2, 6.1): the limit applies to the relative part, whatever the
number of digits in N; a path of length path-max - 1 (C's ``>=`` check) is
accepted in both forms and stays readable and writable by dom0 through its
absolute form (dom0 is limited only by the payload size); one byte more is
EINVAL for the guest, with nothing created.

Layer: the pure engine. The ring variant is in tests/fakexen.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness

from pyxenstored.protocol.ops import Op

PATH_MAX = 2048


def _rel(length: int) -> str:
    parts = []
    while length > 200:
        parts.append("p" * 199)
        length -= 200
    return "/".join([*parts, "q" * length])


@pytest.mark.parametrize("domid", [1, 42, 123, 1234, 12345])
def test_relative_path_at_the_limit(h: Harness, domid: int) -> None:
    home = f"/local/domain/{domid}/"
    h.write_ok(h.dom0, home[:-1])
    h.ok(h.dom0, Op.SET_PERMS, home[:-1], f"n{domid}")
    guest = h.introduce(domid)
    rel = _rel(PATH_MAX - 1)
    h.write_ok(guest, rel, b"edge")
    assert h.read(guest, home + rel) == b"edge"
    assert h.read(h.dom0, home + rel) == b"edge"
    h.write_ok(h.dom0, home + rel, b"dom0")
    assert h.read(guest, rel) == b"dom0"
    assert h.directory(h.dom0, (home + rel).rsplit("/", 1)[0]) == ["q" * 47]
    h.watch(guest, rel, "w")
    h.write_ok(h.dom0, home + rel, b"again")
    assert h.events(guest) == [(rel, "w")]
    over = rel + "x"
    assert h.write(guest, over) == (16, b"EINVAL\0")
    assert h.write(guest, home + over) == (16, b"EINVAL\0")
    assert h.err(guest, Op.MKDIR, over) == "EINVAL"
    assert h.err(guest, Op.READ, over) == "EINVAL"
    assert h.err(h.dom0, Op.READ, home + over) == "ENOENT"  # nothing created
    # dom0 is not limited by path-max.
    h.write_ok(h.dom0, home + over, b"priv")
    assert h.read(h.dom0, home + over) == b"priv"
    # The guest's own absolute paths under another domain's prefix are
    # measured the same way (a 5-digit prefix gives no extra room).
    other = "/local/domain/99999/" + _rel(PATH_MAX)
    assert h.write(guest, other) == (16, b"EINVAL\0")
    assert h.consistent() == []
