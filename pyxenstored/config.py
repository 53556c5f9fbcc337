"""Daemon configuration: the C xenstored's knobs and defaults in one object.

Quota names, order and defaults are those of C xenstored 4.22 (spec 6.1);
the order matters because GET_QUOTA lists names in it.
"""

from typing import Final

import attrs

#: Quota names in C's table order (GET_QUOTA lists them so).
QUOTA_NAMES: Final = (
    "nodes",
    "watches",
    "outstanding",
    "memory",
    "transactions",
    "transaction-nodes",
    "node-permissions",
    "path-max",
    "node-size",
)

QUOTA_DESCRIPTIONS: Final = {
    "nodes": "Nodes per domain",
    "watches": "Watches per domain",
    "outstanding": "Outstanding requests per domain",
    "memory": "Total Xenstore memory per domain",
    "transactions": "Active transactions per domain",
    "transaction-nodes": "Max. number of accessed nodes per transaction",
    "node-permissions": "Max. number of permissions per node",
    "path-max": "Max. length of a node path",
    "node-size": "Max. size of a node",
}

#: Hard quota defaults; 0 means unlimited.
DEFAULT_HARD_QUOTAS: Final = {
    "nodes": 1000,
    "watches": 128,
    "outstanding": 20,
    "memory": 2 * 1024 * 1024 + 512 * 1024,
    "transactions": 10,
    "transaction-nodes": 1024,
    "node-permissions": 5,
    "path-max": 2048,
    "node-size": 2048,
}

#: Soft quotas (a warning only). Only ``memory`` has one by default.
DEFAULT_SOFT_QUOTAS: Final = {"memory": 2 * 1024 * 1024}

#: ``-M`` caps path-max at XENSTORE_REL_PATH_MAX.
REL_PATH_MAX: Final = 2048

#: C's write-rate limit (XSA-206, spec 6.1; compile-time constants there):
#: writes per second shared among the known domains, each domain's burst,
#: the global reserve's ceiling, how many new domains' bursts the reserve
#: may lend (it goes down to -WRL_NEWDOMS * WRL_DBURST), and the seconds
#: without limiting after which "not in force recently" is logged.
WRL_RATE: Final = 200
WRL_DBURST: Final = 10
WRL_GBURST: Final = 1000
WRL_NEWDOMS: Final = 5
WRL_LOGEVERY: Final = 120

DOMID_SELF: Final = 0x7FF0
DOMID_INVALID: Final = 0x7FF4
DOMID_ANY: Final = 0x7FF5
DOMID_FIRST_RESERVED: Final = 0x7FF0

#: Features a server offers (spec 7.1): ERROR | WATCHDEPTH | DOMID_ANY, as C.
FEATURE_RECONNECTION: Final = 1
FEATURE_ERROR: Final = 2
FEATURE_WATCHDEPTH: Final = 4
FEATURE_DOMID_ANY: Final = 8
SUPPORTED_FEATURES: Final = FEATURE_ERROR | FEATURE_WATCHDEPTH | FEATURE_DOMID_ANY


#: C's trace switches, in the order of their TRACE_* bits.
TRACE_SWITCHES: Final = ("obj", "io", "wrl", "acc", "tdb")
#: C enables obj and io by default; they only matter once a trace file is open.
DEFAULT_TRACE_SWITCHES: Final = frozenset({"obj", "io"})


def _hard() -> dict[str, int]:
    return dict(DEFAULT_HARD_QUOTAS)


def _soft() -> dict[str, int]:
    return dict(DEFAULT_SOFT_QUOTAS)


@attrs.define
class Config:
    """Everything the daemon can be told on its command line.

    ``hard_quotas``/``soft_quotas`` are the global defaults copied into each
    domain record when it is created; SET_QUOTA without a domid changes them.
    """

    hard_quotas: dict[str, int] = attrs.field(factory=_hard)
    soft_quotas: dict[str, int] = attrs.field(factory=_soft)
    #: Seconds an unprivileged receiver's undelivered event is kept (``-w watch-event``).
    watch_event_timeout: int = 20
    #: ``-K``: give a dead domain's nodes to the privileged domain instead of deleting them.
    keep_orphans: bool = False
    priv_domid: int = 0
    #: The domain the daemon runs in; socket connections act as it.
    store_domid: int = 0
    #: Queued outgoing bytes per connection beyond which watch events are dropped.
    max_output_bytes: int = 2 * 1024 * 1024
    #: ``-T``: the trace file (CONTROL ``log on`` and ``memreport`` use it too).
    trace_file: str | None = None
    #: ``--trace-control``: the trace switches that are on.
    trace_switches: frozenset[str] = DEFAULT_TRACE_SWITCHES
    #: Requests (with their replies) one transaction records so that a
    #: conflicting commit can be replayed instead of answering EAGAIN
    #: (oxenstored's replay, spec 4.3). The default is oxenstored's
    #: ``quota-maxrequests`` (``Define.maxrequests`` in define.ml, 1024),
    #: which bounds the same list; but there a request past it is refused
    #: with EQUOTA, while here the transaction only stops recording and is
    #: no longer replayable (C's EAGAIN on conflict): nothing C accepts is
    #: refused. 0 (``--no-transaction-replay``): C's behaviour exactly.
    replay_max_requests: int = 1024
