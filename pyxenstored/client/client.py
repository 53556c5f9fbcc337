"""The xenstore client: every op as a typed method, over any trio stream.

``open_client(path)`` connects to a daemon's Unix socket;
``open_stream_client(stream)`` runs the same client over any
``trio.abc.Stream`` (a test's memory stream, a simulated ring). Both are
async context managers because the client needs background tasks (the
connection's reader and writer) and trio wants those in a nursery the
caller can see.

Every method may be called from many tasks at once: requests are
multiplexed on the one connection (see ``connection``). Failures arrive as
``XenstoreError`` (the server's error name), ``ConnectionClosed`` or
``MalformedReply``.
"""

import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar, overload

import trio

from pyxenstored.client.connection import Connection, PendingReply
from pyxenstored.client.nodeops import NodeOperations
from pyxenstored.client.payloads import (
    one_string,
    parse_bool,
    parse_uint,
    strings_payload,
)
from pyxenstored.client.transaction import (
    DEFAULT_RETRY_POLICY,
    RetryPolicy,
    Transaction,
    end_payload,
    retry_on_eagain,
)
from pyxenstored.client.watch import DEFAULT_MAX_QUEUED, WatchRouter, WatchStream
from pyxenstored.protocol.errors import XenstoreError
from pyxenstored.protocol.ops import Op

T = TypeVar("T")

#: Where libxenstore looks when ``XENSTORED_PATH`` is not set.
DEFAULT_SOCKET_PATH = "/var/run/xenstored/socket"


def default_socket_path() -> str:
    """``$XENSTORED_PATH`` or the C daemon's socket, as libxenstore picks it."""
    return os.environ.get("XENSTORED_PATH") or DEFAULT_SOCKET_PATH


class Client(NodeOperations):
    """A connection to a xenstore daemon, with the full op set.

    Build one with ``open_client`` or ``open_stream_client``; a bare
    ``Client(stream)`` does nothing until ``run()`` runs in a nursery.
    The node operations (``read``, ``write``, ...) come from
    ``NodeOperations`` and act outside any transaction.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._router = WatchRouter()
        super().__init__(Connection(stream, self._router.dispatch, self._router.close), 0)
        self._rng = random.Random()

    # -- lifecycle and the low-level interface -------------------------------

    @property
    def connection(self) -> Connection:
        """The multiplexer underneath, for its counters and raw access."""
        return self._connection

    @property
    def watches(self) -> WatchRouter:
        """The watch routing table, for its counters (``unrouted``, ...)."""
        return self._router

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._connection.closed

    async def run(self) -> None:
        """Serve the connection until it ends (run it in a nursery)."""
        await self._connection.run()

    async def aclose(self) -> None:
        """Close the connection; waiting requests get ``ConnectionClosed``."""
        await self._connection.aclose()

    async def request(self, op: int, payload: bytes = b"", tx_id: int = 0) -> bytes:
        """Send any request and return the raw reply payload.

        ``payload`` goes on the wire as is (build it with
        ``payloads.strings_payload``); an ERROR reply raises ``XenstoreError``.
        """
        return await self._connection.request(op, payload, tx_id)

    def send_request(self, op: int, payload: bytes = b"", tx_id: int = 0) -> PendingReply:
        """Queue a request and return at once; ``await`` the result later.

        This is the pipelining primitive: call it N times to have N requests
        in flight, then await the ``PendingReply`` objects in any order.
        """
        return self._connection.send_request(op, payload, tx_id)

    async def pipeline(self, requests: Iterable[tuple[int, bytes]], tx_id: int = 0) -> list[bytes]:
        """Send every ``(op, payload)`` before waiting, then return the replies.

        Replies are returned in request order. If one is an ERROR, its
        ``XenstoreError`` is raised once every earlier reply has arrived; the
        later replies are discarded as they come.
        """
        pending = [self._connection.send_request(op, payload, tx_id) for op, payload in requests]
        return [await reply.wait() for reply in pending]

    # -- watches --------------------------------------------------------------

    def watch(
        self,
        path: str,
        token: str | None = None,
        *,
        depth: int | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> AbstractAsyncContextManager[WatchStream]:
        """Watch ``path``; the context gives a ``WatchStream`` of ``WatchEvent``.

        ``async with client.watch("/a") as events: async for event in events``.
        The first event is the server's immediate one. ``token`` defaults to
        a fresh unique token. ``depth`` (the WATCHDEPTH feature) limits how
        far below ``path`` changes fire. On exit the watch is removed; see
        ``watch`` module for what happens when ``max_queued`` events pile up.
        """
        return self._watch(path, token, depth, max_queued)

    @asynccontextmanager
    async def _watch(
        self, path: str, token: str | None, depth: int | None, max_queued: int
    ) -> AsyncIterator[WatchStream]:
        if token is None:
            token = self._router.new_token()
        args = (path, token) if depth is None else (path, token, str(depth))
        payload = strings_payload(*args)
        stream = self._router.subscribe(path, token, max_queued)
        try:
            await self._call(Op.WATCH, payload)
        except BaseException:
            self._router.unsubscribe(stream)
            raise
        try:
            yield stream
        except BaseException:
            # Failing or cancelled: don't wait (the wait could be cancelled
            # too); the writer still sends the UNWATCH.
            self._router.unsubscribe(stream)
            if not self._connection.closed:
                self._connection.send_request(Op.UNWATCH, strings_payload(path, token))
            raise
        self._router.unsubscribe(stream)
        await self._unwatch_quietly(path, token)

    async def _unwatch_quietly(self, path: str, token: str) -> None:
        # The watch may already be gone (RESET_WATCHES, a dead connection);
        # either way it no longer exists, which is all the caller wanted.
        if self._connection.closed:
            return
        try:
            await self.unwatch(path, token)
        except XenstoreError as exc:
            if exc.name != "ENOENT":
                raise

    async def unwatch(self, path: str, token: str) -> None:
        """Remove a watch on the server (``watch()`` does this on exit)."""
        await self._call(Op.UNWATCH, strings_payload(path, token))

    async def reset_watches(self) -> None:
        """Drop all this connection's watches **and transactions** on the server.

        Open ``WatchStream`` objects stay open but receive nothing more.
        """
        await self._call(Op.RESET_WATCHES, b"\0")

    # -- transactions ---------------------------------------------------------

    async def transaction_start(self) -> int:
        """Open a transaction and return its id (the raw op)."""
        return parse_uint(await self._call(Op.TRANSACTION_START, b"\0"), "TRANSACTION_START")

    async def transaction_end(self, tx_id: int, commit: bool) -> None:
        """End transaction ``tx_id``: commit (EAGAIN on conflict) or abort."""
        await self._connection.send_request(Op.TRANSACTION_END, end_payload(commit), tx_id).wait()

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with client.transaction() as tx``: commit on exit, abort on error.

        A conflict at commit raises ``XenstoreError("EAGAIN")`` from the
        ``async with``; use ``run_transaction`` to retry automatically.
        """
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        tx = Transaction(self._connection, await self.transaction_start())
        try:
            yield tx
        except BaseException:
            tx._abort_in_background()
            raise
        if not tx.ended:
            await tx.commit()

    async def run_transaction(
        self,
        fn: Callable[[Transaction], Awaitable[T]],
        *,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        rng: random.Random | None = None,
    ) -> T:
        """Run ``fn(tx)`` in a transaction and commit, again while EAGAIN.

        ``fn`` may run several times, so it must have no effects outside
        the transaction. Its return value from the attempt that committed
        is returned. After ``policy.attempts`` conflicts the last EAGAIN is
        raised; any other error is raised at once.
        """

        async def attempt() -> T:
            async with self.transaction() as tx:
                return await fn(tx)

        return await retry_on_eagain(attempt, policy, rng or self._rng)

    # -- domains (privileged) -------------------------------------------------

    async def introduce(self, domid: int, gfn: int, port: int) -> None:
        """Tell the daemon about a new domain's ring (``gfn``) and event channel."""
        await self._call(Op.INTRODUCE, strings_payload(str(domid), str(gfn), str(port)))

    async def release(self, domid: int) -> None:
        """Forget a domain: drop its connection and fire ``@releaseDomain``."""
        await self._call(Op.RELEASE, strings_payload(str(domid)))

    async def resume(self, domid: int) -> None:
        """Re-arm the domain's shutdown report (after suspend/resume)."""
        await self._call(Op.RESUME, strings_payload(str(domid)))

    async def get_domain_path(self, domid: int) -> str:
        """The domain's home, ``/local/domain/<domid>``."""
        return one_string(await self._call(Op.GET_DOMAIN_PATH, strings_payload(str(domid))))

    async def is_domain_introduced(self, domid: int) -> bool:
        """Whether the domain is introduced and not yet released or dead."""
        reply = await self._call(Op.IS_DOMAIN_INTRODUCED, strings_payload(str(domid)))
        return parse_bool(reply, "IS_DOMAIN_INTRODUCED")

    async def set_target(self, domid: int, target: int) -> None:
        """Let ``domid`` (a device model stubdom) act as ``target`` too."""
        await self._call(Op.SET_TARGET, strings_payload(str(domid), str(target)))

    async def get_feature(self, domid: int | None = None) -> int:
        """Feature bits: this connection's own, or (privileged) a domain's."""
        payload = b"" if domid is None else strings_payload(str(domid))
        return parse_uint(await self._call(Op.GET_FEATURE, payload), "GET_FEATURE")

    async def set_feature(self, domid: int, value: int) -> None:
        """Set a domain's feature bits, before it is introduced."""
        await self._call(Op.SET_FEATURE, strings_payload(str(domid), str(value)))

    # -- quotas (privileged) --------------------------------------------------

    @overload
    async def get_quota(self, domid: None = None, name: None = None) -> str: ...
    @overload
    async def get_quota(self, domid: int | None, name: str) -> int: ...
    @overload
    async def get_quota(self, domid: int | None = None, *, name: str) -> int: ...

    async def get_quota(self, domid: int | None = None, name: str | None = None) -> str | int:
        """A quota's value, or with no arguments the blank-separated names.

        ``name`` alone is the global default; ``domid`` and ``name`` are that
        domain's value. Names may carry the ``soft-`` prefix.
        """
        if name is None:
            if domid is not None:
                raise ValueError("GET_QUOTA for a domain needs a quota name")
            return one_string(await self._call(Op.GET_QUOTA, b""))
        args = (name,) if domid is None else (str(domid), name)
        return parse_uint(await self._call(Op.GET_QUOTA, strings_payload(*args)), "GET_QUOTA")

    async def quota_names(self) -> list[str]:
        """The quota names the server supports, as a list."""
        return (await self.get_quota()).split()

    async def set_quota(self, domid: int | None, name: str, value: int) -> None:
        """Set a quota: the global default (``domid=None``) or one domain's."""
        args = (name, str(value)) if domid is None else (str(domid), name, str(value))
        await self._call(Op.SET_QUOTA, strings_payload(*args))

    # -- control --------------------------------------------------------------

    async def control(self, *args: str | bytes) -> str:
        """A CONTROL command (``check``, ``quota``, ``live-update`` ...).

        Each argument is sent NUL-terminated; the reply text is returned.
        ``str`` arguments may not contain NUL; a payload that needs raw
        binary (``live-update -d``) can go through ``request(Op.CONTROL, ...)``.
        """
        if not args:
            raise ValueError("CONTROL needs a command")
        return one_string(await self._call(Op.CONTROL, strings_payload(*args)))


@asynccontextmanager
async def open_stream_client(stream: trio.abc.Stream) -> AsyncIterator[Client]:
    """A running ``Client`` over ``stream``, closed (with the stream) on exit."""
    client = Client(stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        try:
            yield client
        finally:
            await client.aclose()


@asynccontextmanager
async def open_client(path: str | os.PathLike[str] | None = None) -> AsyncIterator[Client]:
    """Connect to a daemon's Unix socket (default: ``default_socket_path()``)."""
    stream = await trio.open_unix_socket(path if path is not None else default_socket_path())
    async with open_stream_client(stream) as client:
        yield client
