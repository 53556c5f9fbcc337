"""Path validation and canonical form (spec 2).

A canonical path is a ``str``: absolute (``/...``) or special (``@...``).
Relative paths are resolved against the caller's ``/local/domain/<id>``.
"""

import re
from typing import Final

from pyxenstored.protocol.errors import XenstoreError

_VALID: Final = re.compile(r"[A-Za-z0-9\-/_@]*\Z")
#: C measures path-max after stripping this prefix, for any N (XSA-323).
#: ``sscanf("%5u")`` reads a field of at most five characters, sign included.
_LOCAL_DOMAIN: Final = re.compile(r"/local/domain/[-+]\d{1,4}/|/local/domain/\d{1,5}/")


def domain_path(domid: int) -> str:
    return f"/local/domain/{domid}"


def canonicalize(path: str, domid: int, allow_special: bool, path_max: int = 0) -> str:
    """Return the canonical form of ``path`` as seen by a caller acting as ``domid``.

    ``path_max`` is the caller's path-max quota (0 = unchecked, as for
    privileged callers). Every failure is EINVAL, as in C's ``canonicalize``.
    """
    if _VALID.match(path) is None or (path[:1] == "@" and not allow_special):
        raise XenstoreError("EINVAL")
    if path[:1] not in ("/", "@"):
        path = f"/local/domain/{domid}/{path}"
    if (path[-1:] == "/" and path != "/") or "//" in path:
        raise XenstoreError("EINVAL")
    if path_max:
        match = _LOCAL_DOMAIN.match(path)
        relative = len(path) - (match.end() if match else 0)
        if relative >= path_max:
            raise XenstoreError("EINVAL")
    return path


def parent_of(path: str) -> str:
    """C ``get_parent``: ``/`` for top-level nodes and for ``@`` paths."""
    slash = path.rfind("/", 1)
    return path[:slash] if slash > 0 else "/"


def basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def depth_of(path: str) -> int:
    """Levels below ``/``: 0 for ``/``, 1 for ``/a``, 2 for ``/a/b``."""
    return 0 if path == "/" else path.count("/")


def ancestors_and_self(path: str) -> list[str]:
    """``/``, then each ancestor down to ``path`` itself (no recursion)."""
    result = ["/"]
    if path == "/":
        return result
    index = path.find("/", 1)
    while index > 0:
        result.append(path[:index])
        index = path.find("/", index + 1)
    result.append(path)
    return result
