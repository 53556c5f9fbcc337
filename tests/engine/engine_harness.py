"""A thin driver for the pure engine: requests in, (type, payload) out.

Imported by ``tests/engine/conftest.py`` (the ``h`` fixture) and by the
test modules of this directory; pytest's default ``prepend`` import mode
puts this directory on ``sys.path``.
"""

from __future__ import annotations

from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet
from pyxenstored.store.consistency import check_tree
from pyxenstored.store.permissions import owner

ERROR = int(Op.ERROR)
WATCH_EVENT = int(Op.WATCH_EVENT)

Arg = str | bytes


def _b(arg: Arg) -> bytes:
    return arg.encode("latin-1") if isinstance(arg, str) else arg


def nul_args(*args: Arg) -> bytes:
    """Each argument NUL-terminated, the usual request payload."""
    return b"".join(_b(arg) + b"\0" for arg in args)


class Harness:
    """One engine, one privileged socket connection (``dom0``) and helpers."""

    def __init__(self, config: Config | None = None) -> None:
        self.engine = Engine(config or Config())
        self.dom0 = self.engine.connect_socket()
        self._req_id = 0
        self._events: dict[int, list[tuple[str, str]]] = {}
        #: Every packet that came out per connection, in order (for ordering tests).
        self.log: dict[int, list[Packet]] = {}

    # ------------------------------------------------------------ low level

    def send(self, conn: int, op: int, payload: bytes, tx: int = 0) -> list[Packet]:
        """Send one raw packet; return every packet it produced on ``conn``."""
        self._req_id += 1
        self.engine.handle(conn, Packet(op, self._req_id, tx, payload))
        return self.drain(conn)

    def drain(self, conn: int) -> list[Packet]:
        packets = Decoder().feed(self.engine.take_output(conn))
        self.log.setdefault(conn, []).extend(packets)
        return packets

    def raw(self, conn: int, op: int, payload: bytes, tx: int = 0) -> tuple[int, bytes]:
        """Send a raw payload; return the reply, stashing events for ``events``."""
        packets = self.send(conn, op, payload, tx)
        reply: tuple[int, bytes] | None = None
        for packet in packets:
            if packet.type == WATCH_EVENT and packet.req_id == 0 and reply is None:
                self._stash(conn, packet)
            elif reply is None:
                assert packet.req_id == self._req_id
                assert packet.tx_id == tx
                reply = (packet.type, packet.payload)
            else:
                assert packet.type == WATCH_EVENT
                self._stash(conn, packet)
        assert reply is not None, f"no reply to op {op}"
        return reply

    def _stash(self, conn: int, packet: Packet) -> None:
        path, token, tail = packet.payload.split(b"\0")
        assert tail == b""
        self._events.setdefault(conn, []).append(
            (path.decode("latin-1"), token.decode("latin-1"))
        )

    # ----------------------------------------------------------- requests

    def request(self, conn: int, op: int, *args: Arg, tx: int = 0) -> tuple[int, bytes]:
        """Arguments NUL-terminated (WRITE: the value is sent raw, see ``write``)."""
        return self.raw(conn, op, nul_args(*args), tx)

    def ok(self, conn: int, op: int, *args: Arg, tx: int = 0) -> bytes:
        type_, payload = self.request(conn, op, *args, tx=tx)
        assert type_ == op, f"op {op} {args!r} failed: {payload!r}"
        return payload

    def err(self, conn: int, op: int, *args: Arg, tx: int = 0) -> str:
        type_, payload = self.request(conn, op, *args, tx=tx)
        assert type_ == ERROR, f"op {op} {args!r} succeeded: {payload!r}"
        return payload.rstrip(b"\0").decode()

    def result(self, conn: int, op: int, *args: Arg, tx: int = 0) -> str:
        """``OK`` (or the reply text) on success, the error name on failure."""
        return self.request(conn, op, *args, tx=tx)[1].rstrip(b"\0").decode("latin-1")

    def write(self, conn: int, path: str, value: Arg = b"", tx: int = 0) -> tuple[int, bytes]:
        return self.raw(conn, Op.WRITE, _b(path) + b"\0" + _b(value), tx)

    def write_ok(self, conn: int, path: str, value: Arg = b"", tx: int = 0) -> None:
        assert self.write(conn, path, value, tx) == (Op.WRITE, b"OK\0")

    def read(self, conn: int, path: str, tx: int = 0) -> bytes:
        return self.ok(conn, Op.READ, path, tx=tx)

    def directory(self, conn: int, path: str, tx: int = 0) -> list[str]:
        payload = self.ok(conn, Op.DIRECTORY, path, tx=tx)
        return [name for name in payload.decode().split("\0") if name]

    def perms(self, conn: int, path: str) -> list[str]:
        return self.ok(conn, Op.GET_PERMS, path).decode().split("\0")[:-1]

    def set_perms(self, conn: int, path: str, *perms: str, tx: int = 0) -> str:
        return self.result(conn, Op.SET_PERMS, path, *perms, tx=tx)

    def start(self, conn: int) -> int:
        return int(self.ok(conn, Op.TRANSACTION_START, "").rstrip(b"\0"))

    def end(self, conn: int, tx: int, commit: bool = True) -> str:
        return self.result(conn, Op.TRANSACTION_END, "T" if commit else "F", tx=tx)

    def watch(self, conn: int, path: str, token: str, *depth: str) -> None:
        """Register and swallow the initial event."""
        self.ok(conn, Op.WATCH, path, token, *depth)
        assert self.events(conn) == [(path, token)]

    def events(self, conn: int) -> list[tuple[str, str]]:
        """Events stashed so far plus any still queued, then forgotten."""
        for packet in self.drain(conn):
            assert packet.type == WATCH_EVENT, packet
            self._stash(conn, packet)
        return self._events.pop(conn, [])

    # ---------------------------------------------------------------- time

    def set_time(self, now: float) -> None:
        """The shell's clock reading (seconds), as it gives one before each batch."""
        self.engine.set_time(now)

    def ring_readable(self, conn: int) -> bool:
        """Whether the shell would read this connection's ring now: not while
        its domain's write credit is negative (XSA-206). A request the guest
        offers meanwhile stays in its ring, unhandled."""
        return self.engine.write_credit_wait(conn) == 0.0

    # ------------------------------------------------------------- domains

    def introduce(self, domid: int, port: int = 7) -> int:
        self.ok(self.dom0, Op.INTRODUCE, str(domid), "123", str(port))
        domain = self.engine.domains.get(domid)
        assert domain is not None and domain.conn_id is not None
        return domain.conn_id

    def set_quota(self, domid: int, name: str, value: int) -> None:
        self.ok(self.dom0, Op.SET_QUOTA, str(domid), name, str(value))

    # ----------------------------------------------------------- invariants

    def recount(self, domid: int) -> int:
        return sum(1 for node in self.engine.tree.nodes.values() if owner(node.perms) == domid)

    def consistent(self) -> list[str]:
        return check_tree(self.engine.tree)


class World:
    """The standard scene most table rows run against (see ``world``).

    ::

        /local/domain/5        ""   n5          guest 5's home (conn ``g5``)
        /local/domain/5/data   "d"  n5
        /local/domain/6        ""   n6          guest 6's home (conn ``g6``)
        /pub                   "p"  r0          readable by everyone
        /pub/open              "o"  b0          readable and writable by everyone
        /priv                  "s"  n0          dom0 only
        /priv/child            "c"  n0 r5       readable by 5, parent is not
        /acl                   "a"  n0 w5 r5    first match: 5 may only write
    """

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.dom0 = h.dom0
        d0 = h.dom0
        h.write_ok(d0, "/local/domain/5")
        h.ok(d0, Op.SET_PERMS, "/local/domain/5", "n5")
        h.write_ok(d0, "/local/domain/6")
        h.ok(d0, Op.SET_PERMS, "/local/domain/6", "n6")
        self.g5 = h.introduce(5)
        self.g6 = h.introduce(6, port=8)
        h.write_ok(self.g5, "data", b"d")
        for path, value, perms in (
            ("/pub", b"p", ("r0",)),
            ("/pub/open", b"o", ("b0",)),
            ("/priv", b"s", ("n0",)),
            ("/priv/child", b"c", ("n0", "r5")),
            ("/acl", b"a", ("n0", "w5", "r5")),
        ):
            h.write_ok(d0, path, value)
            h.ok(d0, Op.SET_PERMS, path, *perms)

    def conn(self, who: str) -> int:
        return {"dom0": self.dom0, "g5": self.g5, "g6": self.g6}[who]

    def run(self, who: str, op: int, args: tuple[Arg, ...], tx: int = 0) -> tuple[int, bytes]:
        """``args`` NUL-terminated, except that WRITE's last one is the raw value."""
        if op == Op.WRITE and len(args) >= 2:
            payload = nul_args(*args[:-1]) + _b(args[-1])
        else:
            payload = nul_args(*args)
        return self.h.raw(self.conn(who), op, payload, tx)

    def outcome(self, who: str, op: int, *args: Arg, tx: int = 0) -> bytes | str:
        """The success payload (bytes), or the error name (str)."""
        type_, payload = self.run(who, op, args, tx)
        if type_ == ERROR:
            return payload.rstrip(b"\0").decode()
        assert type_ == op
        return payload
