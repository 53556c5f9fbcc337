"""Per-domain usage counters that quotas are checked against.

Counters are keyed by domid and hold only what the tree and the watch
broker charge; limits live with the domain records in the engine.
"""

from collections import defaultdict

import attrs


@attrs.define
class Usage:
    nodes: int = 0
    memory: int = 0
    watches: int = 0
    transactions: int = 0


@attrs.define
class Accounting:
    """Usage per domid, created on first charge."""

    usage: defaultdict[int, Usage] = attrs.field(factory=lambda: defaultdict(Usage))

    def charge(self, domid: int, nodes: int, memory: int) -> None:
        entry = self.usage[domid]
        entry.nodes += nodes
        entry.memory += memory

    def of(self, domid: int) -> Usage:
        return self.usage[domid]

    def forget(self, domid: int) -> None:
        """A dead domain's counters go with it, so a reused domid starts at 0 (XSA-483)."""
        self.usage.pop(domid, None)
