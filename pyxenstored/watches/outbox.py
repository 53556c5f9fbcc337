"""A connection's queue of outgoing messages, with the C daemon's bounds.

Replies are always queued (the shell stops reading from a connection whose
replies pile up, so they are bounded by the outstanding limit). Watch
events are bounded here: one over 4096 bytes is dropped (XSA-324), one
identical to an event still unsent is collapsed, and once the queued
bytes pass the limit further events are dropped, as C does when the
receiver's memory quota is hit (XSA-326).
"""

import attrs

from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import PAYLOAD_MAX, encode


@attrs.define(eq=False)
class Outbox:
    limit: int
    chunks: list[bytes] = attrs.field(factory=list)
    size: int = 0
    replies: int = 0
    #: (path, token) of events queued and unsent, for collapsing duplicates.
    pending_events: set[tuple[str, str]] = attrs.field(factory=set)
    dropped_events: int = 0

    def reply(self, message: bytes) -> None:
        self.chunks.append(message)
        self.size += len(message)
        self.replies += 1

    def event(self, path: str, token: str) -> bool:
        """Queue a WATCH_EVENT; False if it was dropped or collapsed."""
        payload = f"{path}\0{token}\0".encode("latin-1")
        if len(payload) > PAYLOAD_MAX:
            self.dropped_events += 1
            return False
        special = path[:1] == "@"
        key = (path, token)
        if not special and key in self.pending_events:
            return False
        if self.size + len(payload) > self.limit:
            self.dropped_events += 1
            return False
        if not special:
            self.pending_events.add(key)
        message = encode(Op.WATCH_EVENT, 0, 0, payload)
        self.chunks.append(message)
        self.size += len(message)
        return True

    def initial_event(self, path: str, token: str) -> None:
        """The unconditional event after WATCH (spec 5.1): not collapsed or filtered."""
        payload = f"{path}\0{token}\0".encode("latin-1")
        if len(payload) > PAYLOAD_MAX:
            self.dropped_events += 1
            return
        message = encode(Op.WATCH_EVENT, 0, 0, payload)
        self.chunks.append(message)
        self.size += len(message)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        self.replies = 0
        self.pending_events.clear()
        return data

    def clear(self) -> None:
        self.take()
