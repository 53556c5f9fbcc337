"""The operations on nodes, shared by a client and a transaction.

READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART, GET_PERMS and SET_PERMS
are exactly the ops a transaction affects (spec 1.3); they differ between
the two only in the ``tx_id`` of the header. Writing them once, against a
connection and a ``tx_id``, keeps a ``Transaction`` a drop-in for the
client in code that takes "something I can read and write".
"""

from collections.abc import Sequence

from pyxenstored.client.connection import Connection
from pyxenstored.client.payloads import (
    parse_directory_part,
    split_strings,
    strings_payload,
    write_payload,
)
from pyxenstored.protocol.ops import Op


class NodeOperations:
    """Node ops bound to one connection and one transaction id (0 = none)."""

    def __init__(self, connection: Connection, tx_id: int = 0) -> None:
        self._connection = connection
        self._tx_id = tx_id

    async def _call(self, op: Op, payload: bytes) -> bytes:
        return await self._connection.send_request(op, payload, self._tx_id).wait()

    async def read(self, path: str) -> bytes:
        """The node's value, raw: values are bytes and may hold NULs."""
        return await self._call(Op.READ, strings_payload(path))

    async def write(self, path: str, value: bytes | str) -> None:
        """Set the value, creating the node and its missing ancestors.

        A ``str`` value is written as UTF-8.
        """
        await self._call(Op.WRITE, write_payload(path, value))

    async def mkdir(self, path: str) -> None:
        """Create the node with an empty value; an existing node is left alone."""
        await self._call(Op.MKDIR, strings_payload(path))

    async def rm(self, path: str) -> None:
        """Remove the node and its whole subtree."""
        await self._call(Op.RM, strings_payload(path))

    async def directory(self, path: str) -> list[str]:
        """The names (not paths) of the node's children, in creation order."""
        return split_strings(await self._call(Op.DIRECTORY, strings_payload(path)))

    async def directory_part(self, path: str, offset: int) -> tuple[int, list[str], bool]:
        """One chunk of a child list too long for DIRECTORY (spec 1.5).

        Returns ``(generation, names, done)``. ``offset`` is a byte offset
        into the ``name\\0name\\0...`` list: add ``len(name) + 1`` for each
        name returned; start again from 0 if ``generation`` changed.
        """
        payload = strings_payload(path, str(offset))
        return parse_directory_part(await self._call(Op.DIRECTORY_PART, payload))

    async def get_perms(self, path: str) -> list[str]:
        """The permission list, owner first: ``["n0", "r5", ...]``."""
        return split_strings(await self._call(Op.GET_PERMS, strings_payload(path)))

    async def set_perms(self, path: str, perms: Sequence[str]) -> None:
        """Replace the permission list; the first entry names the owner."""
        if isinstance(perms, str):
            raise TypeError("perms must be a sequence of permission strings, not one str")
        await self._call(Op.SET_PERMS, strings_payload(path, *perms))
