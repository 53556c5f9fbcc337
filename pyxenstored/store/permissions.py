"""Node permissions: parsing, formatting and the access decision (spec 3).

A permission list is a tuple of ``Perm``; entry 0 names the owner and its
letter is the access for everyone else. Tuples are immutable, so nodes
created by inheritance share their parent's list without copying.
"""

from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from pyxenstored.config import DOMID_ANY
from pyxenstored.protocol.args import strtol0
from pyxenstored.protocol.errors import XenstoreError

NONE: Final = 0
READ: Final = 1
WRITE: Final = 2
OWNER: Final = 8
#: A stale entry: its domain is gone or unknown (XSA-322); kept but never matched.
IGNORE: Final = 0x10
ALL: Final = READ | WRITE | OWNER

_LETTERS: Final = {"n": NONE, "r": READ, "w": WRITE, "b": READ | WRITE}
_NAMES: Final = {NONE: "n", READ: "r", WRITE: "w", READ | WRITE: "b"}


class Perm(NamedTuple):
    flags: int
    domid: int


Perms = tuple[Perm, ...]


def parse_perm(text: str) -> Perm:
    """``[rwbn]<domid>``, the domid read by ``strtol(.., 0)`` as C's
    ``xenstore_strings_to_perms`` does."""
    flags = _LETTERS.get(text[:1])
    if flags is None:
        raise XenstoreError("EINVAL")
    value, rest = strtol0(text[1:])
    if rest or len(text) == 1:
        raise XenstoreError("EINVAL")
    # C stores the id in an unsigned int: keep the low 32 bits.
    return Perm(flags, value % 2**32)


def parse_perms(texts: Iterable[str]) -> Perms:
    return tuple(parse_perm(text) for text in texts)


def format_perm(perm: Perm) -> str:
    """``%i`` formatting: a domid of 0xffffffff prints as ``-1``, as in C."""
    domid = perm.domid - 2**32 if perm.domid >= 2**31 else perm.domid
    return f"{_NAMES[perm.flags & (READ | WRITE)]}{domid}"


def format_perms(perms: Sequence[Perm]) -> bytes:
    """The GET_PERMS reply: every entry (stale ones too), each NUL-terminated."""
    return "".join(format_perm(perm) + "\0" for perm in perms).encode("ascii")


def owner(perms: Perms) -> int:
    return perms[0].domid


def access(perms: Perms, domid: int, target: int | None, privileged: bool) -> int:
    """What a caller may do with a node (C ``perm_for_conn``).

    Privileged callers and the owner (or a domain targeting it, or anyone
    when the owner is DOMID_ANY) get everything; otherwise the first
    matching non-stale ACL entry decides, else entry 0's letter.
    """
    if privileged:
        return ALL
    first = perms[0]
    if first.domid == domid or first.domid == target or first.domid == DOMID_ANY:
        return ALL
    for perm in perms[1:]:
        if perm.flags & IGNORE:
            continue
        if perm.domid == domid or perm.domid == target or perm.domid == DOMID_ANY:
            return perm.flags & (READ | WRITE)
    return first.flags & (READ | WRITE)


def with_owner(perms: Perms, domid: int) -> Perms:
    """Inherited permissions with the creator as owner (spec 3.3)."""
    if perms[0].domid == domid:
        return perms
    return (Perm(perms[0].flags, domid), *perms[1:])


def without_domain(perms: Perms, domid: int) -> Perms:
    """ACL entries naming a dead domain removed (spec 3.6)."""
    return (perms[0], *(perm for perm in perms[1:] if perm.domid != domid))
