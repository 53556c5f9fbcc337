"""Watch registrations and matching an event path to them (spec 5.1, 5.2, 5.6).

Watches are indexed by canonical path, so matching an event on E costs one
dict lookup per ancestor of E (SUBTREE) or one lookup (EXACT), however many
watches exist.
"""

from collections.abc import Iterator

import attrs

from pyxenstored.store.paths import ancestors_and_self, depth_of


@attrs.define(slots=True, eq=False)
class Watch:
    conn_id: int
    #: Canonical watched path.
    path: str
    token: str
    #: Levels below ``path`` that match; -1 for unlimited.
    depth: int
    #: Characters stripped from event paths for a relative registration.
    prefix_len: int
    #: Registration order, set by the registry: C delivers in this order.
    seq: int = 0

    def event_path(self, path: str) -> str:
        return path[self.prefix_len :]


def delivery_order(watch: Watch) -> tuple[int, int]:
    """C walks connections in creation order, then each one's watches in registration order."""
    return watch.conn_id, watch.seq


def _within_depth(watch: Watch, event_depth: int) -> bool:
    return watch.depth < 0 or event_depth - depth_of(watch.path) <= watch.depth


@attrs.define(eq=False)
class WatchRegistry:
    """All watches of all connections, by canonical path."""

    by_path: dict[str, list[Watch]] = attrs.field(factory=dict)
    registrations: int = 0

    def add(self, watch: Watch) -> None:
        self.registrations += 1
        watch.seq = self.registrations
        self.by_path.setdefault(watch.path, []).append(watch)

    def remove(self, watch: Watch) -> None:
        watches = self.by_path[watch.path]
        watches.remove(watch)
        if not watches:
            del self.by_path[watch.path]

    def subtree(self, path: str) -> list[Watch]:
        """Watches on ``path`` or an ancestor whose depth reaches ``path``.

        A list, not a generator: every write asks, and most find nothing.
        """
        by_path = self.by_path
        if not by_path:
            return []
        if path[0] == "@":
            # ``@`` nodes are nobody's descendants, not even ``/``'s (C ``is_child``).
            return list(by_path.get(path, ()))
        matches: list[Watch] = []
        event_depth = -1
        for ancestor in ancestors_and_self(path):
            watches = by_path.get(ancestor)
            if watches:
                if event_depth < 0:
                    event_depth = depth_of(path)
                matches.extend(watch for watch in watches if _within_depth(watch, event_depth))
        return matches

    def exact(self, path: str) -> Iterator[Watch]:
        yield from self.by_path.get(path, ())

    def special(
        self, name: str, domid: int, plain: bool = True, per_domain: bool = True
    ) -> Iterator[tuple[Watch, str]]:
        """Watches for ``@introduceDomain``/``@releaseDomain`` and the path each receives.

        A plain watch (no depth) on ``@X`` gets ``@X``; one with depth >= 1 on
        ``@X``, or any watch on ``@X/<domid>``, gets ``@X/<domid>`` (spec 5.6).
        C fires the two forms separately when a shutdown is seen, so each can
        be left out.
        """
        domain_path = f"{name}/{domid}"
        for watch in self.by_path.get(name, ()):
            if watch.depth < 0:
                if plain:
                    yield watch, name
            elif watch.depth > 0 and per_domain:
                yield watch, domain_path
        if per_domain:
            for watch in self.by_path.get(domain_path, ()):
                yield watch, domain_path
