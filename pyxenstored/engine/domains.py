"""The domain table: what the daemon knows about each domain (spec 1.5, 6.1).

A record exists for every domain that has been introduced or that a quota,
feature or permission referred to; quotas are copied from the global
defaults when the record is created. Whether a domain exists at all is the
hypervisor's answer, which comes in through ``DomainInfo`` so the engine
stays free of I/O.
"""

from typing import Protocol

import attrs

from pyxenstored.config import DOMID_FIRST_RESERVED, SUPPORTED_FEATURES, Config


class DomainInfo(Protocol):
    """The hypervisor's view of domains, as far as the engine needs it."""

    def exists(self, domid: int) -> bool: ...


class NoHypervisor:
    """Running without Xen (socket-only): every ordinary domid may exist.

    This is what lets a dom0 tool chmod a node for a guest that the daemon
    has never seen; see docs/compatibility.md.
    """

    def exists(self, domid: int) -> bool:
        return 0 <= domid < DOMID_FIRST_RESERVED


@attrs.define(eq=False)
class Domain:
    domid: int
    hard_quotas: dict[str, int]
    soft_quotas: dict[str, int]
    features: int = SUPPORTED_FEATURES
    introduced: bool = False
    #: The guest's end of its xenstore event channel (INTRODUCE), to re-bind
    #: after a restart.
    port: int = 0
    conn_id: int | None = None
    #: Its shutdown has been announced on ``@releaseDomain``; RESUME re-arms it.
    shutdown_reported: bool = False


@attrs.frozen
class DomainStatus:
    """What the hypervisor says of an existing domain (after VIRQ_DOM_EXC)."""

    shutdown: bool = False
    dying: bool = False


@attrs.define(eq=False)
class DomainTable:
    config: Config
    info: DomainInfo
    domains: dict[int, Domain] = attrs.field(factory=dict)

    def get(self, domid: int) -> Domain | None:
        return self.domains.get(domid)

    def find_or_create(self, domid: int) -> Domain | None:
        """The record for a domain the hypervisor knows, created on demand (C
        ``find_or_alloc_existing_domain``); None for an unknown domain."""
        domain = self.domains.get(domid)
        if domain is None and self.info.exists(domid):
            domain = Domain(
                domid,
                dict(self.config.hard_quotas),
                dict(self.config.soft_quotas),
            )
            self.domains[domid] = domain
        return domain

    def remove(self, domid: int) -> None:
        self.domains.pop(domid, None)
