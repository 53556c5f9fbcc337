"""Watch subscriptions: WATCH_EVENT packets routed to async iterators.

The server tells a client which of its watches fired only by the token
(spec 5.1), so events are routed by token. Tokens the client makes up are
unique per connection; a caller may still reuse one token on several paths,
and then the event also goes by path: to the subscriptions whose watch path
is the event path or an ancestor of it, or to all of them if none is
(watches may fire spuriously, spec 5.2, so over-delivering is safe where
guessing wrong is not).

Queue policy: each subscription has a bounded queue (``max_queued``,
default 1024, oxenstored's per-watch limit). When it is full, a new event
is **dropped** and counted in ``WatchStream.dropped``. Blocking instead
would stall the single reader task, and with it every reply on the
connection: a task that does one request before draining its events (the
usual "event, then read the node" loop) would deadlock against itself.
Dropping is what xenstore itself does under pressure (C drops events over
the memory quota, and duplicates of unsent ones), and a watch event is only
a hint to re-read state, so a consumer that sees ``dropped`` grow should
re-read the whole subtree it watches.
"""

import itertools

import attrs
import trio

from pyxenstored.client.errors import ConnectionClosed
from pyxenstored.client.payloads import split_strings
from pyxenstored.protocol.wire import Packet

#: Events a subscription holds before it starts dropping (see module doc).
DEFAULT_MAX_QUEUED = 1024


@attrs.frozen(slots=True)
class WatchEvent:
    """One firing of a watch: the path that changed and the watch's token.

    For a watch on a relative path the server sends a relative path; for
    special watches it is the ``@`` name (``@releaseDomain/3`` with depth).
    """

    path: str
    token: str


class WatchStream:
    """The events of one watch, as an async iterator.

    The first event is the server's immediate one after WATCH (spec 5.1),
    useful to know the watch is live. Iteration ends when the watch is
    removed; if the connection ends instead, the events already queued are
    still yielded and then ``ConnectionClosed`` is raised.
    """

    def __init__(self, path: str, token: str, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.path = path
        self.token = token
        #: Events discarded because the queue was full (see module doc).
        self.dropped = 0
        self._send, self._receive = trio.open_memory_channel[WatchEvent](max_queued)
        self._closed_reason: str | None = None
        self._closed_cause: BaseException | None = None

    def __aiter__(self) -> "WatchStream":
        return self

    async def __anext__(self) -> WatchEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._closed_reason is not None:
                raise ConnectionClosed(self._closed_reason) from self._closed_cause
            raise StopAsyncIteration from None

    async def receive(self) -> WatchEvent:
        """The next event; ``trio.EndOfChannel`` once the watch is removed."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise trio.EndOfChannel from None

    def receive_nowait(self) -> WatchEvent:
        """The next queued event, or ``trio.WouldBlock`` if there is none."""
        return self._receive.receive_nowait()

    def _deliver(self, event: WatchEvent) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except trio.ClosedResourceError:
            pass

    def _close(self, reason: str | None = None, cause: BaseException | None = None) -> None:
        if reason is not None and self._closed_reason is None:
            self._closed_reason = reason
            self._closed_cause = cause
        self._send.close()


def _path_covers(watch_path: str, event_path: str) -> bool:
    """Whether an event on ``event_path`` can belong to a watch on ``watch_path``."""
    if event_path == watch_path:
        return True
    prefix = watch_path if watch_path.endswith("/") else watch_path + "/"
    return event_path.startswith(prefix)


class WatchRouter:
    """The client's table of subscriptions, fed by the connection's reader."""

    def __init__(self) -> None:
        self._by_token: dict[str, list[WatchStream]] = {}
        self._tokens = itertools.count(1)
        self._closed_reason: str | None = None
        self._closed_cause: BaseException | None = None
        #: Well-formed events that matched no subscription (e.g. after unwatch).
        self.unrouted = 0
        #: Events whose payload was not ``path\\0token\\0``.
        self.malformed = 0

    def new_token(self) -> str:
        """A token no other subscription of this client uses."""
        while True:
            token = f"pyxenstored:{next(self._tokens)}"
            if token not in self._by_token:
                return token

    def subscribe(self, path: str, token: str, max_queued: int) -> WatchStream:
        """Register a stream before WATCH is sent, so the first event finds it."""
        stream = WatchStream(path, token, max_queued)
        if self._closed_reason is not None:
            stream._close(self._closed_reason, self._closed_cause)
        else:
            self._by_token.setdefault(token, []).append(stream)
        return stream

    def unsubscribe(self, stream: WatchStream) -> None:
        """Stop routing to ``stream`` and end its iteration."""
        streams = self._by_token.get(stream.token)
        if streams is not None and stream in streams:
            streams.remove(stream)
            if not streams:
                del self._by_token[stream.token]
        stream._close()

    def dispatch(self, packet: Packet) -> None:
        """Route one WATCH_EVENT packet; never blocks, never raises."""
        parts = split_strings(packet.payload)
        if len(parts) < 2:
            self.malformed += 1
            return
        event = WatchEvent(parts[0], parts[1])
        streams = self._by_token.get(event.token)
        if not streams:
            self.unrouted += 1
            return
        if len(streams) > 1:
            matching = [s for s in streams if _path_covers(s.path, event.path)]
            streams = matching or streams
        for stream in streams:
            stream._deliver(event)

    def close(self, reason: str, cause: BaseException | None) -> None:
        """The connection ended: every stream ends with ``ConnectionClosed``."""
        self._closed_reason = reason
        self._closed_cause = cause
        streams = [s for group in self._by_token.values() for s in group]
        self._by_token.clear()
        for stream in streams:
            stream._close(reason, cause)
