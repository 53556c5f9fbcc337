"""Exceptions that only a client raises.

Wire errors (an ERROR reply) are the protocol package's ``XenstoreError``, so
code that handles a server's ``ENOENT`` is the same on both sides; what is
defined here are the failures that have no wire name: the connection going
away, and a server answering something the client cannot parse.
"""

from pyxenstored.protocol.errors import ProtocolError


class ConnectionClosed(Exception):
    """The connection ended, so this request (or watch) can never be answered.

    Raised to every request still waiting for its reply when the server
    closes the connection, when the connection breaks, or when the client is
    closed; raised at once by any request made afterwards. ``reason`` says
    which of these happened; the underlying error, if any, is the
    ``__cause__``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedReply(ProtocolError):
    """A reply's payload does not have the shape its operation promises.

    Kept distinct from ``XenstoreError`` because the request's outcome is
    unknown: the server may have done the work and then answered badly.
    """
