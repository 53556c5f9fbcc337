"""Helpers the advisory tests share (imported by name: conftest modules of
several test directories would shadow each other)."""

from __future__ import annotations

from engine_harness import Harness

from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.engine.domains import DomainInfo
from pyxenstored.protocol.ops import Op


class Hypervisor:
    """A ``DomainInfo`` whose set of existing domains the test controls."""

    def __init__(self, *domids: int) -> None:
        self.alive: set[int] = {0, *domids}

    def exists(self, domid: int) -> bool:
        return domid in self.alive


def harness_with(info: DomainInfo, config: Config | None = None) -> Harness:
    """A Harness whose engine asks ``info`` which domains exist."""
    harness = Harness(config)
    harness.engine = Engine(config or Config(), info)
    harness.dom0 = harness.engine.connect_socket()
    return harness


def make_home(h: Harness, domid: int, port: int = 7) -> int:
    """As the toolstack does: dom0 creates /local/domain/<domid> owned by it,
    then introduces the domain; returns the guest's connection."""
    h.write_ok(h.dom0, f"/local/domain/{domid}")
    h.ok(h.dom0, Op.SET_PERMS, f"/local/domain/{domid}", f"n{domid}")
    return h.introduce(domid, port)
