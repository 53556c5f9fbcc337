"""What every drill's load runs over: a socket client (dom0) or a simulated
guest on its ring, with the subtree it works in. Each drill subclasses it
with the record its own checks need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyxenstored.client import Client

#: The grant frame INTRODUCE names (the stand-in ignores it).
GFN = 0xFEFFF


class Stop(Exception):
    """The worker's connection is gone: stop quietly (the drill has counted it)."""


@dataclass(eq=False)
class Actor:
    """A connection that runs load: a socket client (dom0) or a guest's ring."""

    name: str
    #: Where its keys live (absolute).
    base: str
    #: A guest's home: its paths are sent relative to it.
    home: str | None = None
    domid: int | None = None
    client: Client | None = None
    guest: Any = None  # ring_guest.RingGuest

    def wire(self, path: str) -> str:
        """The path as this actor sends it."""
        if self.home is not None:
            return path.removeprefix(self.home + "/")
        return path

    def the_client(self) -> Client:
        if self.client is None:
            raise RuntimeError(f"{self.name} has no connection")
        return self.client

    async def introduce(self, dom0: Client, fx: Any, ring_guest: Any) -> None:
        """A guest: create its domain in the stand-in ``fx`` and its ring page
        (``ring_guest.RingGuest``), give it its home, and introduce it."""
        assert self.home is not None and self.domid is not None
        fx.set_domain(self.domid, "running")
        self.guest = ring_guest.RingGuest(fx.root, self.domid)
        await dom0.mkdir(self.home)
        await dom0.set_perms(self.home, [f"n{self.domid}"])
        await dom0.introduce(self.domid, GFN, self.guest.port)
