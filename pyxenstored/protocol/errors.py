"""The error names that cross the wire (xs_wire.h ``xsd_errors``, spec 1.4).

Only the name travels; the table order is fixed upstream and new names may
only be appended, so it is kept here as a tuple rather than derived.
"""

from typing import Final

ERROR_NAMES: Final = (
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
)
_KNOWN: Final = frozenset(ERROR_NAMES)


class XenstoreError(Exception):
    """A request failed with a wire error name such as ``ENOENT``.

    The core raises it from deep inside an operation and the engine turns it
    into one ERROR reply; names outside the table become EINVAL, as C does.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name if name in _KNOWN else "EINVAL"


class ProtocolError(Exception):
    """The peer broke framing (e.g. ``len`` over 4096): drop the connection."""
