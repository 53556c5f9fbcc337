"""The summary table both drills print: one layout, so their reports read alike.

Each drill knows its own rows and title; the frame around them (the rules,
the aligned columns, ABORTED and the verdict, the findings kept in full and
how many more there were, the paths of what was left behind) is here.
"""

from __future__ import annotations

from collections.abc import Sequence


def render(
    title: str,
    rows: Sequence[tuple[str, str]],
    *,
    value_width: int,
    rule_extra: int,
    ok: bool,
    aborted: str | None,
    findings: Sequence[str],
    failures: int,
    up_to: bool = False,
    trailing: Sequence[str] = (),
) -> str:
    """The table: ``title``, a rule, ``rows`` (names left, values right in
    ``value_width``), a rule ``rule_extra`` wider than the names, ABORTED (its
    first line) and the verdict, then the findings with how many of
    ``failures`` were not kept (``up to`` that many where one finding may stand
    for several counted failures), then ``trailing``."""
    width = max(len(name) for name, _ in rows)
    rule = "-" * (width + rule_extra)
    lines = [title, rule]
    lines += [f"{name:<{width}}  {value:>{value_width}}" for name, value in rows]
    lines.append(rule)
    if aborted:
        lines.append(f"ABORTED: {aborted.splitlines()[0]}")
    lines.append("verdict: " + ("PASS" if ok else "FAIL"))
    if findings:
        lines.append("")
        lines += findings
        hidden = failures - len(findings)
        if hidden > 0:
            lines.append(f"... and {'up to ' if up_to else ''}{hidden} more")
    lines += trailing
    return "\n".join(lines)
