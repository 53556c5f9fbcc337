"""C xenstored's write-rate limit (XSA-206, spec 6.1): credit arithmetic and state.

A guest that keeps writing while transactions are open makes them fail
with EAGAIN; C bounds how fast it can do so. Each introduced domain holds a
credit in milli-credits (integers, as C's ``wrl_creditt``): a node written
outside a transaction costs one credit while any transaction is open, and
so does a commit while other transactions are open. Credit refills at
``WRL_RATE`` writes per second shared equally among the known domains, up
to a burst of ``WRL_DBURST`` per domain; what a domain would get beyond its
burst goes to a global reserve (up to ``WRL_GBURST``), which tops up
domains in debt and seeds new ones (it may lend down to
``-WRL_NEWDOMS * WRL_DBURST``). While its credit is negative a domain's
ring is not read; the shell asks how long that lasts.

The arithmetic is C's (``wrl_xfer_credit``, ``wrl_credit_update``,
``wrl_check_timeout``, ``wrl_apply_debit_actual``, ``wrl_log_periodic``
in domain.c), with time given by the caller in whole milliseconds (``None``
before the shell's first clock reading: no time passes until then). Which
requests are charged, and for how many nodes, is the engine's business.
"""

from typing import Final

import attrs

from pyxenstored.config import WRL_DBURST, WRL_GBURST, WRL_LOGEVERY, WRL_NEWDOMS, WRL_RATE

#: Milli-credits per credit (C's fixed-point factor); one write costs one credit.
WRL_FACTOR: Final = 1000
#: C's saturation bound on credit and on the milliseconds one update counts.
CREDIT_MAX: Final = 1000 * 1000 * 1000
#: C caps the computed wake-up (an ``int`` of milliseconds) at INT_MAX.
_INT_MAX: Final = 2**31 - 1


def xfer_credit(debit: int, debit_floor: int, credit: int, credit_ceil: int) -> tuple[int, int]:
    """Move as much as possible from ``debit`` to ``credit`` keeping
    ``debit >= debit_floor`` and ``credit <= credit_ceil``; nothing if either
    is violated already. Returns the new ``(debit, credit)``."""
    amount = min(debit - debit_floor, credit_ceil - credit)
    if amount > 0:
        return debit - amount, credit + amount
    return debit, credit


@attrs.define
class DomainCredit:
    """One introduced domain's share (C's ``wrl_credit``, ``wrl_timestamp``)."""

    #: Milli-credits, normally in ``[-cost, dburst]``; below 0 the ring is not read.
    credit: int = 0
    #: Milliseconds of the last update; None until the clock was first read.
    timestamp: int | None = None
    #: "domain N is affected" was logged once already.
    delay_logged: bool = False


@attrs.define
class WriteRateLimit:
    """The global state: every introduced domain's credit, the reserve, the
    number of open transactions (all connections'), and the log throttle."""

    writecost: int = WRL_FACTOR
    #: Milli-credits per second shared by all domains.
    rate: int = WRL_RATE * WRL_FACTOR
    dburst: int = WRL_DBURST * WRL_FACTOR
    gburst: int = WRL_GBURST * WRL_FACTOR
    newdoms_dburst: int = WRL_NEWDOMS * WRL_DBURST * WRL_FACTOR
    logevery: int = WRL_LOGEVERY
    #: Milli-credits, in ``[-newdoms_dburst, gburst]``.
    reserve: int = 0
    #: Introduced domains in introduction order; C's ``wrl_ndomains`` is its size.
    domains: dict[int, DomainCredit] = attrs.field(factory=dict)
    #: C's ``wrl_ntransactions``: transactions open on every connection.
    transactions: int = 0
    #: Second of the last limiting (C's ``wrl_log_last_warning``); 0: none recently.
    last_warning: int = 0

    # -------------------------------------------------------- domain lifecycle

    def new_domain(self, domid: int, now: int | None) -> DomainCredit:
        """C ``wrl_domain_new``: start at 0 and take up to a burst from the reserve.

        A domain already known keeps its state (a re-introduction does not
        create a new domain in C either).
        """
        state = self.domains.get(domid)
        if state is not None:
            return state
        state = self.domains[domid] = DomainCredit(0, now)
        self.reserve, state.credit = xfer_credit(
            self.reserve, -self.newdoms_dburst, state.credit, self.dburst
        )
        return state

    def destroy_domain(self, domid: int) -> None:
        """C ``wrl_domain_destroy``: give what is left (not the time since the
        last update) back to the reserve, up to one burst."""
        state = self.domains.pop(domid, None)
        if state is not None:
            state.credit, self.reserve = xfer_credit(state.credit, 0, self.reserve, self.dburst)

    def start_clock(self, now: int) -> None:
        """The first clock reading: domains known before it (the privileged
        one, from start-up) start earning from now, as C's do from their
        introduction."""
        for state in self.domains.values():
            if state.timestamp is None:
                state.timestamp = now

    # ------------------------------------------------------------- arithmetic

    def update(self, state: DomainCredit, now: int | None) -> int:
        """C ``wrl_credit_update``: add the whole milliseconds' share since the
        last update, take from the reserve to get back to 0, and return the
        surplus over the burst to the reserve. Returns the discarded surplus
        (what did not fit in the reserve either)."""
        if now is None or state.timestamp is None:
            msec = 0
        else:
            # C subtracts unsigned: a clock that went back counts as the maximum.
            msec = now - state.timestamp
            if msec < 0 or msec > CREDIT_MAX:
                msec = CREDIT_MAX
        denom = msec * self.rate
        num = len(self.domains) * 1000
        state.credit = min(state.credit + denom // num, CREDIT_MAX)
        self.reserve, state.credit = xfer_credit(self.reserve, 0, state.credit, 0)
        state.credit, surplus = xfer_credit(state.credit, self.dburst, 0, CREDIT_MAX)
        surplus, self.reserve = xfer_credit(surplus, 0, self.reserve, self.gburst)
        if now is not None:
            state.timestamp = now
        return surplus

    def check_timeout(self, state: DomainCredit, now: int | None) -> int | None:
        """C ``wrl_check_timeout``: update, then None if the domain is not
        blocked, else the milliseconds until its own share brings the credit
        back to 0 (rounded down, so possibly 0)."""
        self.update(state, now)
        if state.credit >= 0:
            return None
        num = -state.credit * 1000 * len(self.domains)
        return min(num // self.rate, _INT_MAX)

    def debit(self, domid: int, now: int | None) -> str | None:
        """C ``wrl_apply_debit_actual`` for one node written: update, charge
        one write, and return the log line C would write, if any.

        A domain not known yet (a connection restored without its credit)
        is added as C adds a new domain.
        """
        state = self.domains.get(domid)
        if state is None:
            state = self.new_domain(domid, now)
        self.update(state, now)
        state.credit -= self.writecost
        if state.credit >= 0:
            return None
        line = None
        if not state.delay_logged:
            state.delay_logged = True
            line = f"domain {domid} is affected"
        elif not self.last_warning:
            line = "rate limiting restarts"
        self.last_warning = (now or 0) // 1000
        return line

    def periodic(self, now: int | None) -> str | None:
        """C ``wrl_log_periodic``: "not in force recently" once limiting has
        not happened for more than ``logevery`` seconds."""
        if now is None or not self.last_warning:
            return None
        if now // 1000 - self.last_warning > self.logevery:
            self.last_warning = 0
            return "not in force recently"
        return None

    # ------------------------------------------------------------ for the shell

    def wait(self, domid: int, now: int | None) -> int:
        """Milliseconds before the domain's ring may be read again; 0 now.

        C's main loop updates every domain's credit on each pass (so idle
        domains' surplus reaches the reserve that a blocked one draws from)
        and sleeps until the earliest wake-up; this is evaluated per domain,
        when asked. A blocked domain waits at least 1 ms: C polls again at
        once, but no credit comes before the clock moves on.
        """
        state = self.domains.get(domid)
        if state is None:
            return 0
        self.update(state, now)
        if state.credit >= 0:
            return 0
        for other in self.domains.values():
            if other is not state:
                self.update(other, now)
        wakeup = self.check_timeout(state, now)
        return 0 if wakeup is None else max(wakeup, 1)
