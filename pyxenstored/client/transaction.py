"""Transactions: node ops bound to a ``tx_id``, and retrying on conflict.

A transaction is optimistic (spec 4): the server says EAGAIN at commit if
something it read changed meanwhile, and the id is dead after END whatever
the outcome, so the only correct reaction is to run the whole body again in
a new transaction. ``run_transaction`` packages that loop; the randomized,
growing pause between attempts keeps two clients that keep conflicting with
each other from retrying in lockstep forever.
"""

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from pyxenstored.client.connection import Connection
from pyxenstored.client.nodeops import NodeOperations
from pyxenstored.client.payloads import strings_payload
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.ops import Op

T = TypeVar("T")


def end_payload(commit: bool) -> bytes:
    """TRANSACTION_END's payload: ``T\\0`` commits, ``F\\0`` aborts."""
    return strings_payload("T" if commit else "F")


class Transaction(NodeOperations):
    """The node operations of one open transaction.

    Obtained from ``Client.transaction()`` (or passed to the function given
    to ``Client.run_transaction``); ``commit()`` and ``abort()`` end it
    early, after which the context manager does nothing more.
    """

    def __init__(self, connection: Connection, tx_id: int) -> None:
        super().__init__(connection, tx_id)
        self._ended = False

    @property
    def tx_id(self) -> int:
        """The id the server gave this transaction."""
        return self._tx_id

    @property
    def ended(self) -> bool:
        """Whether END has been sent; the id is then dead whatever the reply."""
        return self._ended

    async def commit(self) -> None:
        """Commit; ``XenstoreError("EAGAIN")`` means start over."""
        await self._end(True)

    async def abort(self) -> None:
        """Discard every change made in the transaction."""
        await self._end(False)

    async def _end(self, commit: bool) -> None:
        if self._ended:
            raise RuntimeError(f"transaction {self._tx_id} already ended")
        self._ended = True
        await self._connection.send_request(
            Op.TRANSACTION_END, end_payload(commit), self._tx_id
        ).wait()

    def _abort_in_background(self) -> None:
        """Send an abort without waiting for its reply.

        Used when the body failed or was cancelled: waiting could itself be
        cancelled, and the reply changes nothing. The connection's writer
        still sends it, before any later request, so a retry's new
        TRANSACTION_START reaches the server after this END.
        """
        if self._ended or self._connection.closed:
            return
        self._ended = True
        self._connection.send_request(Op.TRANSACTION_END, end_payload(False), self._tx_id)


@attrs.frozen
class RetryPolicy:
    """How ``run_transaction`` retries a transaction that hit EAGAIN.

    Before retry ``n`` (1-based) it sleeps a uniformly random time in
    ``[0, min(max_delay, base_delay * 2 ** (n - 1))]`` ("full jitter"), and
    it gives up after ``attempts`` tries, re-raising the last EAGAIN.
    """

    attempts: int = 10
    base_delay: float = 0.002
    max_delay: float = 0.25

    def delay(self, retry: int, rng: random.Random) -> float:
        """The pause before retry number ``retry`` (1-based)."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))


DEFAULT_RETRY_POLICY = RetryPolicy()


async def retry_on_eagain(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    rng: random.Random,
) -> T:
    """Run ``attempt`` until it does not fail with EAGAIN, within ``policy``."""
    retry = 0
    while True:
        try:
            return await attempt()
        except XenstoreError as exc:
            retry += 1
            if exc.name != "EAGAIN" or retry >= policy.attempts:
                raise
        await trio.sleep(policy.delay(retry, rng))
