"""A client connection as the engine sees it: identity, watches, transactions, outbox."""

import attrs

from pyxenstored.transactions import TransactionView
from pyxenstored.watches import Outbox, Watch


@attrs.define(eq=False)
class Connection:
    conn_id: int
    #: The domain the connection acts as (store_domid for sockets).
    domid: int
    is_socket: bool
    privileged: bool
    outbox: Outbox
    watches: dict[tuple[str, str], Watch] = attrs.field(factory=dict)
    transactions: dict[int, TransactionView] = attrs.field(factory=dict)
    #: Last transaction id handed out; ids are per connection and skip 0.
    last_tx_id: int = 0
    #: Ids of transactions open when the daemon crashed: EAGAIN until ended.
    lost_transactions: set[int] = attrs.field(factory=set)
    #: SET_TARGET: the domain this connection may also act as.
    target: int | None = None
    #: A ring that misbehaved: nothing more is read or sent, but the domain
    #: record stays until the domain dies, so @releaseDomain fires then (XSA-325).
    ignored: bool = False

    def next_tx_id(self) -> int:
        """C's per-connection counter: skip 0 and ids still in use."""
        tx_id = self.last_tx_id
        while True:
            tx_id = (tx_id + 1) % 2**32
            if tx_id and tx_id not in self.transactions and tx_id not in self.lost_transactions:
                self.last_tx_id = tx_id
                return tx_id
