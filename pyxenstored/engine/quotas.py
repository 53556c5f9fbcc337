"""GET_QUOTA and SET_QUOTA (spec 1.5, 6.1): names, soft prefix, global vs per domain."""

from pyxenstored.config import QUOTA_NAMES, Config
from pyxenstored.engine.domains import DomainTable
from pyxenstored.protocol.args import parse_domid
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.requests import GetQuota, SetQuota

SOFT_PREFIX = "soft-"


def domid_arg(text: str) -> int:
    return parse_domid(text)


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


def get_quota(config: Config, domains: DomainTable, request: GetQuota) -> bytes:
    if request.name is None:
        return names(config).encode() + b"\0"
    hard, soft = config.hard_quotas, config.soft_quotas
    if request.domid is not None:
        domain = domains.find_or_create(request.domid)
        if domain is None:
            raise XenstoreError("ENOENT")
        hard, soft = domain.hard_quotas, domain.soft_quotas
    table, name = _table(request.name, hard, soft)
    return f"{table[name]}\0".encode()


def set_quota(config: Config, domains: DomainTable, request: SetQuota) -> None:
    hard, soft = config.hard_quotas, config.soft_quotas
    if request.domid is not None:
        domain = domains.find_or_create(request.domid)
        if domain is None:
            raise XenstoreError("ENOENT")
        hard, soft = domain.hard_quotas, domain.soft_quotas
    table, name = _table(request.name, hard, soft)
    if request.value == 2**32 - 1:
        raise XenstoreError("EINVAL")
    table[name] = request.value
