"""The client side's record of what it asked for, and the checks against it.

Every state-changing request the load sends is written down with its
``PendingReply``, before anyone waits for it. Its outcome is read from the
reply only at check time, after the restart, so a request whose sender was
cancelled by the kill is still judged correctly:

- **acknowledged**: a reply came (for RM, ENOENT counts too: the node is
  gone either way);
- **failed**: an error reply, so it changed nothing (a commit's EAGAIN);
- **in flight**: sent, no reply. The daemon may or may not have applied it
  before it died (or, for a guest, may apply it after the restart from the
  ring), so both outcomes are allowed.

For a plain key, one writer sends its changes one at a time, so the key
must hold the value of the last acknowledged change or of an in-flight one
sent after it. A transaction group (a counter and member keys, shared by
several writers, so commits conflict) must hold member values that all
come from the one commit that set the counter, a counter no lower than the
highest acknowledged commit's, and only values of commits that were not
refused. After a check the observed state becomes the baseline of the next
cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pyxenstored.client import ConnectionClosed, PendingReply
from pyxenstored.client.payloads import error_name
from pyxenstored.protocol.ops import Op

Outcome = Literal["acknowledged", "failed", "in flight"]
ACKED: Outcome = "acknowledged"
FAILED: Outcome = "failed"
IN_FLIGHT: Outcome = "in flight"

#: A node's value, or None when it does not exist.
Value = str | None


async def outcome(reply: PendingReply, harmless: Iterable[str] = ()) -> Outcome:
    """What became of one request, as far as its sender can tell now.

    ``harmless`` error names count as acknowledged (RM's ENOENT).
    """
    if not reply.done:
        return IN_FLIGHT
    try:
        packet = await reply.wait_packet()  # already there: returns at once
    except ConnectionClosed:
        return IN_FLIGHT  # the connection died with the daemon
    if packet.type == Op.ERROR:
        return ACKED if error_name(packet.payload) in harmless else FAILED
    return ACKED


def show(value: Value) -> str:
    return "(absent)" if value is None else repr(value)


@dataclass
class Change:
    """One WRITE (``value``) or RM (``value`` None) of a key."""

    value: Value
    reply: PendingReply

    async def outcome(self) -> Outcome:
        return await outcome(self.reply, ("ENOENT",) if self.value is None else ())


@dataclass
class Finding:
    """One check that failed: its kind and a line for the report."""

    kind: Literal["lost", "half-applied", "unexpected"]
    text: str


@dataclass
class KeyLedger:
    """One key with a single writer."""

    path: str  # absolute, as dom0 reads it
    #: What the key may hold before this cycle's changes.
    baseline: set[Value] = field(default_factory=lambda: {None})
    changes: list[Change] = field(default_factory=list)

    def record(self, value: Value, reply: PendingReply) -> None:
        self.changes.append(Change(value, reply))

    async def settle(self) -> tuple[set[Value], Value | None, int, int]:
        """``(allowed values, last acknowledged value, acknowledged, in flight)``."""
        outcomes = [await change.outcome() for change in self.changes]
        last = max((i for i, o in enumerate(outcomes) if o == ACKED), default=None)
        if last is None:
            allowed = set(self.baseline)
            start = 0
        else:
            allowed = {self.changes[last].value}
            start = last + 1
        allowed.update(
            change.value
            for change, o in zip(self.changes[start:], outcomes[start:], strict=True)
            if o == IN_FLIGHT
        )
        acked_value = self.changes[last].value if last is not None else None
        return allowed, acked_value, outcomes.count(ACKED), outcomes.count(IN_FLIGHT)

    async def check(self, observed: Value) -> tuple[Finding | None, int]:
        """Compare with the value read back; returns a finding (or None) and
        the number of changes that were still in flight."""
        allowed, acked_value, acked, in_flight = await self.settle()
        finding = None
        if observed not in allowed:
            choices = ", ".join(sorted(show(v) for v in allowed))
            if acked:
                kind = "RM" if acked_value is None else "write"
                finding = Finding(
                    "lost",
                    f"{self.path}: acknowledged {kind} lost: holds {show(observed)}, "
                    f"expected one of {choices}",
                )
            else:
                finding = Finding(
                    "unexpected",
                    f"{self.path}: holds {show(observed)}, expected one of {choices}",
                )
        self.baseline = {observed}
        self.changes.clear()
        return finding, in_flight


@dataclass
class Commit:
    """One TRANSACTION_END(T) of a group transaction."""

    counter: int
    value: str
    reply: PendingReply


def commit_value(counter: int, writer: str, seq: int) -> str:
    return f"{counter}:{writer}:{seq}"


def counter_of(value: str) -> int | None:
    head = value.partition(":")[0]
    return int(head) if head.isdigit() else None


@dataclass
class GroupLedger:
    """A transaction group: ``<base>/n`` counts commits, and every commit
    writes one value to each member ``<base>/<m>``."""

    base: str  # absolute
    members: tuple[str, ...] = ("a", "b", "c")
    #: The counter and member value seen at the last check.
    count: int = 0
    value: Value = None
    commits: list[Commit] = field(default_factory=list)

    @property
    def counter_path(self) -> str:
        return f"{self.base}/n"

    def member_paths(self) -> list[str]:
        return [f"{self.base}/{m}" for m in self.members]

    def record(self, counter: int, value: str, reply: PendingReply) -> None:
        self.commits.append(Commit(counter, value, reply))

    async def check(
        self, counter: Value, members: list[Value]
    ) -> tuple[list[Finding], int]:
        """Compare with the counter and members read back; returns the
        findings and the number of commits that were still in flight."""
        findings: list[Finding] = []
        outcomes = [await outcome(commit.reply) for commit in self.commits]
        shown = ", ".join(f"{m}={show(v)}" for m, v in zip(self.members, members, strict=True))
        if counter is None:
            n = 0
        elif counter.isdigit():
            n = int(counter)
        else:
            findings.append(Finding("unexpected", f"{self.counter_path}: holds {show(counter)}"))
            n = self.count
        member = members[0]
        if not findings and (
            len(set(members)) != 1 or n != (0 if member is None else counter_of(member))
        ):
            findings.append(
                Finding(
                    "half-applied",
                    f"{self.base}: members from different commits: n={show(counter)} {shown}",
                )
            )
        acked = [c.counter for c, o in zip(self.commits, outcomes, strict=True) if o == ACKED]
        highest = max(acked, default=self.count)
        if n < highest:
            findings.append(
                Finding(
                    "lost",
                    f"{self.base}: acknowledged commit lost: counter {n}, but commit "
                    f"{highest} was acknowledged",
                )
            )
        if not findings:
            if n == self.count:
                legal: set[Value] = {self.value}
            else:
                legal = {
                    c.value for c, o in zip(self.commits, outcomes, strict=True) if o != FAILED
                }
            if member not in legal:
                findings.append(
                    Finding(
                        "unexpected",
                        f"{self.base}: holds {shown} (counter {n}), which no "
                        "acknowledged or in-flight commit wrote",
                    )
                )
        self.count = n
        self.value = member
        self.commits.clear()
        return findings, outcomes.count(IN_FLIGHT)
