"""The watch broker: registrations, matching, and per-connection event queues."""

from pyxenstored.watches.outbox import Outbox as Outbox
from pyxenstored.watches.registry import Watch as Watch
from pyxenstored.watches.registry import WatchRegistry as WatchRegistry
