"""GET_QUOTA and SET_QUOTA (spec 1.5, 6.1): names, soft prefix, global vs per domain."""

from pyxenstored.config import QUOTA_NAMES, Config
from pyxenstored.engine.domains import DomainTable
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.requests import GetQuota, SetQuota

SOFT_PREFIX = "soft-"


def _table(
    name: str, hard: dict[str, int], soft: dict[str, int]
) -> tuple[dict[str, int], str]:
    """Which table a (possibly ``soft-``) name lives in; EINVAL if unknown or disabled."""
    if name.startswith(SOFT_PREFIX):
        base = name[len(SOFT_PREFIX) :]
        if base not in soft:
            raise XenstoreError("EINVAL")
        return soft, base
    if name not in QUOTA_NAMES:
        raise XenstoreError("EINVAL")
    return hard, name


def names(config: Config) -> str:
    """Every supported name in C's order, soft ones after their hard one."""
    result = []
    for name in QUOTA_NAMES:
        result.append(name)
        if name in config.soft_quotas:
            result.append(SOFT_PREFIX + name)
    return " ".join(result)


def _lookup(
    config: Config, domains: DomainTable, domid: int | None, name: str
) -> tuple[dict[str, int], str]:
    """The global table (no domid) or the domain's, allocated on demand as in C."""
    hard, soft = config.hard_quotas, config.soft_quotas
    if domid is not None:
        domain = domains.find_or_create(domid)
        if domain is None:
            raise XenstoreError("ENOENT")
        hard, soft = domain.hard_quotas, domain.soft_quotas
    return _table(name, hard, soft)


def get_quota(config: Config, domains: DomainTable, request: GetQuota) -> bytes:
    if request.name is None:
        return names(config).encode() + b"\0"
    table, name = _lookup(config, domains, request.domid, request.name)
    return f"{table[name]}\0".encode()


def set_quota(config: Config, domains: DomainTable, request: SetQuota) -> None:
    table, name = _lookup(config, domains, request.domid, request.name)
    if request.value == 2**32 - 1:
        raise XenstoreError("EINVAL")
    table[name] = request.value
