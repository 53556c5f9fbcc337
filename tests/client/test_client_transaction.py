"""Transactions: tx_id binding, commit/abort, and retry on EAGAIN."""

import random

import pytest
import trio
import trio.testing
from client_fake_peer import FakePeer, error_bytes, reply_bytes

from pyxenstored.client import Client, RetryPolicy, Transaction, XenstoreError
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet


class TxServer:
    """Hands out transaction ids; fails the first ``conflicts`` commits with EAGAIN."""

    def __init__(self, conflicts: int = 0, commit_error: str = "EAGAIN") -> None:
        self.conflicts = conflicts
        self.commit_error = commit_error
        self.next_tx = 40
        self.ends: list[tuple[int, bytes]] = []

    def __call__(self, request: Packet) -> bytes:
        if request.type == Op.TRANSACTION_START:
            self.next_tx += 1
            return reply_bytes(request, f"{self.next_tx}\0".encode())
        if request.type == Op.TRANSACTION_END:
            self.ends.append((request.tx_id, request.payload))
            if request.payload == b"T\0" and self.conflicts:
                self.conflicts -= 1
                return error_bytes(request, self.commit_error)
            return reply_bytes(request, b"OK\0")
        if request.type == Op.READ:
            return reply_bytes(request, b"v%d" % request.tx_id)
        if request.type == Op.DIRECTORY_PART:
            return reply_bytes(request, b"5\0\0")
        return reply_bytes(request, b"OK\0")


async def test_transaction_commits_on_normal_exit(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    server = TxServer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        async with client.transaction() as tx:
            assert tx.tx_id == 41
            assert await tx.read("/a") == b"v41"
            await tx.write("/a", b"2")
            await tx.mkdir("/d")
            await tx.rm("/e")
            await tx.directory("/")
            await tx.get_perms("/a")
            await tx.set_perms("/a", ["n0"])
            assert await tx.directory_part("/", 0) == (5, [], True)
        assert tx.ended
        nursery.cancel_scope.cancel()
    start, *body, end = peer.requests
    assert (start.type, start.tx_id, start.payload) == (Op.TRANSACTION_START, 0, b"\0")
    assert [r.type for r in body] == [
        Op.READ,
        Op.WRITE,
        Op.MKDIR,
        Op.RM,
        Op.DIRECTORY,
        Op.GET_PERMS,
        Op.SET_PERMS,
        Op.DIRECTORY_PART,
    ]
    assert all(r.tx_id == 41 for r in body)
    assert (end.type, end.tx_id, end.payload) == (Op.TRANSACTION_END, 41, b"T\0")


async def test_transaction_aborts_on_exception(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    server = TxServer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        with pytest.raises(RuntimeError, match="boom"):
            async with client.transaction() as tx:
                await tx.write("/a", b"1")
                raise RuntimeError("boom")
        await client.mkdir("/sync")  # the abort went out before this
        nursery.cancel_scope.cancel()
    assert server.ends == [(41, b"F\0")]
    assert peer.requests[-1].type == Op.MKDIR


async def test_transaction_aborts_when_cancelled(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    server = TxServer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        with trio.move_on_after(0.02):
            async with client.transaction():
                await trio.sleep_forever()
        await client.mkdir("/sync")
        nursery.cancel_scope.cancel()
    assert server.ends == [(41, b"F\0")]


async def test_explicit_abort_inside_the_block(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    server = TxServer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        async with client.transaction() as tx:
            await tx.abort()
            with pytest.raises(RuntimeError, match="already ended"):
                await tx.commit()
        nursery.cancel_scope.cancel()
    assert server.ends == [(41, b"F\0")]  # no second END on exit


async def test_conflict_at_commit_raises_eagain(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    server = TxServer(conflicts=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        with pytest.raises(XenstoreError) as info:
            async with client.transaction() as tx:
                await tx.write("/a", b"1")
        nursery.cancel_scope.cancel()
    assert info.value.name == "EAGAIN"
    assert server.ends == [(41, b"T\0")]  # the id is dead: no abort after a failed commit


async def test_run_transaction_retries_on_eagain(
    pair: tuple[Client, FakePeer], autojump_clock: trio.testing.MockClock
) -> None:
    client, peer = pair
    server = TxServer(conflicts=2)
    attempts: list[int] = []

    async def body(tx: Transaction) -> bytes:
        attempts.append(tx.tx_id)
        value = await tx.read("/counter")
        await tx.write("/counter", value + b"+")
        return value

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        start = trio.current_time()
        result = await client.run_transaction(body)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert attempts == [41, 42, 43]  # a new transaction for every attempt
    assert result == b"v43"  # the committed attempt's value
    assert server.ends == [(41, b"T\0"), (42, b"T\0"), (43, b"T\0")]
    policy = RetryPolicy()
    assert 0 <= elapsed <= 3 * policy.base_delay  # pauses of at most base, then 2 * base


async def test_run_transaction_gives_up_after_the_policy_attempts(
    pair: tuple[Client, FakePeer], autojump_clock: trio.testing.MockClock
) -> None:
    client, peer = pair
    server = TxServer(conflicts=100)
    calls = 0

    async def body(tx: Transaction) -> None:
        nonlocal calls
        calls += 1

    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=2.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        start = trio.current_time()
        with pytest.raises(XenstoreError, match="EAGAIN"):
            await client.run_transaction(body, policy=policy, rng=random.Random(1))
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert calls == 4
    # Three pauses, each at most min(2, 1 * 2**n): 1 + 2 + 2.
    assert 0 < elapsed <= 5.0


async def test_run_transaction_retries_eagain_raised_inside_the_body(
    pair: tuple[Client, FakePeer], autojump_clock: trio.testing.MockClock
) -> None:
    client, peer = pair
    server = TxServer()
    calls = 0

    async def body(tx: Transaction) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise XenstoreError("EAGAIN")
        return "done"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        assert await client.run_transaction(body) == "done"
        await client.mkdir("/sync")
        nursery.cancel_scope.cancel()
    assert server.ends == [(41, b"F\0"), (42, b"T\0")]


async def test_run_transaction_does_not_retry_other_errors(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    server = TxServer(conflicts=1, commit_error="ENOSPC")
    calls = 0

    async def body(tx: Transaction) -> None:
        nonlocal calls
        calls += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server)
        with pytest.raises(XenstoreError, match="ENOSPC"):
            await client.run_transaction(body)
        nursery.cancel_scope.cancel()
    assert calls == 1


def test_retry_policy_delay_is_jittered_and_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.01, max_delay=0.05)
    rng = random.Random(7)
    delays = [[policy.delay(n, rng) for _ in range(200)] for n in (1, 2, 3, 8)]
    assert all(0 <= d <= 0.01 for d in delays[0])
    assert all(0 <= d <= 0.02 for d in delays[1])
    assert all(0 <= d <= 0.04 for d in delays[2])
    assert all(0 <= d <= 0.05 for d in delays[3])
    assert len(set(delays[3])) > 100  # randomized, not a fixed schedule
    assert max(delays[3]) > 0.04  # and the cap is reached, not the exponent
