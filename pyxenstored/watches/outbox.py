"""A connection's queue of outgoing messages, with the C daemon's bounds.

Replies are always queued (the shell stops reading from a connection whose
replies pile up, so they are bounded by the outstanding limit). Watch
events are bounded here: one over 4096 bytes is dropped (XSA-324), one
identical to an event still unsent is collapsed, once the queued bytes
pass the limit further events are dropped, as C does when the receiver's
memory quota is hit (XSA-326), and an event left unsent too long can be
expired (spec 5.7).

Messages stay here, whole, until the shell takes them: a socket takes
everything at once, a ring only what it can hold, so a guest that stops
reading leaves its backlog in this bounded queue rather than in the shell.
"""

from collections import deque
from typing import NamedTuple

import attrs

from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import HEADER_SIZE, PAYLOAD_MAX, encode


class _Message(NamedTuple):
    data: bytes
    #: None for a reply; the (path, token) of a collapsible event; () for
    #: ``@`` events, which are never collapsed.
    event: tuple[str, str] | tuple[()] | None
    #: The engine's clock reading when it was queued, for expiry.
    queued_at: float


_NOT_COLLAPSIBLE: tuple[()] = ()


@attrs.define(eq=False)
class Outbox:
    limit: int
    messages: deque[_Message] = attrs.field(factory=deque)
    size: int = 0
    replies: int = 0
    #: (path, token) of events queued and unsent, for collapsing duplicates.
    pending_events: set[tuple[str, str]] = attrs.field(factory=set)
    dropped_events: int = 0

    def reply(self, message: bytes, now: float = 0.0) -> None:
        self.messages.append(_Message(message, None, now))
        self.size += len(message)
        self.replies += 1

    def event(self, path: str, token: str, now: float = 0.0) -> bool:
        """Queue a WATCH_EVENT; False if it was dropped or collapsed."""
        payload = f"{path}\0{token}\0".encode("latin-1")
        if len(payload) > PAYLOAD_MAX:
            self.dropped_events += 1
            return False
        key: tuple[str, str] | tuple[()] = _NOT_COLLAPSIBLE if path[:1] == "@" else (path, token)
        if key and key in self.pending_events:
            return False
        if self.size + HEADER_SIZE + len(payload) > self.limit:
            self.dropped_events += 1
            return False
        if key:
            self.pending_events.add(key)
        message = encode(Op.WATCH_EVENT, 0, 0, payload)
        self.messages.append(_Message(message, key, now))
        self.size += len(message)
        return True

    def take(self, max_bytes: int | None = None) -> bytes:
        """Whole messages from the front: all of them, or as many as fit in
        ``max_bytes`` (at least one, so a large message still goes out)."""
        messages = self.messages
        taken: list[bytes] = []
        size = 0
        while messages:
            data = messages[0].data
            if max_bytes is not None and taken and size + len(data) > max_bytes:
                break
            message = messages.popleft()
            taken.append(data)
            size += len(data)
            if message.event is None:
                self.replies -= 1
            elif message.event:
                self.pending_events.discard(message.event)
        self.size -= size
        return b"".join(taken)

    def expire_events(self, queued_before: float) -> int:
        """Drop events queued before ``queued_before`` and not yet taken; how many."""
        kept: deque[_Message] = deque()
        dropped = 0
        for message in self.messages:
            if message.event is not None and message.queued_at < queued_before:
                dropped += 1
                self.size -= len(message.data)
                if message.event:
                    self.pending_events.discard(message.event)
            else:
                kept.append(message)
        self.messages = kept
        self.dropped_events += dropped
        return dropped

    def saved(self, now: float) -> list[tuple[bytes, list[str] | None, float]]:
        """Every queued message as (bytes, event key, age), for a live update."""
        return [
            (m.data, None if m.event is None else list(m.event), now - m.queued_at)
            for m in self.messages
        ]

    def load(self, saved: list[tuple[bytes, list[str] | None, float]], now: float) -> None:
        """Queue ``saved`` messages as they were (after a live update)."""
        for data, event, age in saved:
            key: tuple[str, str] | tuple[()] | None
            if event is None:
                key = None
                self.replies += 1
            elif event:
                key = (event[0], event[1])
                self.pending_events.add(key)
            else:
                key = _NOT_COLLAPSIBLE
            self.messages.append(_Message(data, key, now - age))
            self.size += len(data)

    def pending_replies(self) -> list[bytes]:
        """The replies not yet taken, in order (what a restart must still send)."""
        return [message.data for message in self.messages if message.event is None]

    def clear(self) -> None:
        self.take()
