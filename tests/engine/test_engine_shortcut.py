"""The privileged shortcut (``Engine._answer_directly``) answers READ and
WRITE exactly as the general path does, watch events included, for every
payload, existing node or not."""

from __future__ import annotations

from engine_harness import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.engine import Engine
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet

PIECES = st.sampled_from(
    [b"/", b"a", b"b", b"/a", b"/a/b", b"/a/b/c", b"@releaseDomain", b"//", b"\0", b"x", b"-",
     b"\xff", b"/local/domain/0/x", b"@", b"/new"]
)
PAYLOADS = st.one_of(
    st.lists(PIECES, max_size=5).map(b"".join),
    st.sampled_from([b"/a\0", b"/a/b\0", b"/a/b/c\0", b"/\0", b"@releaseDomain\0", b"/zz\0"]),
    st.binary(max_size=12),
)
REQUESTS = st.lists(st.tuples(st.sampled_from([Op.READ, Op.WRITE]), PAYLOADS), min_size=1,
                    max_size=10)


def populated() -> tuple[Harness, int]:
    h = Harness()
    for path in ("/a/b/c", "/local/domain/0/x"):
        h.write_ok(h.dom0, path, path.encode())
    h.write_ok(h.dom0, "/a", b"A")
    guest = h.introduce(5)
    h.ok(h.dom0, Op.SET_PERMS, "/a/b", "n0", "r5")
    h.watch(guest, "/a", "g")
    h.watch(h.dom0, "/", "d")
    h.events(guest)
    h.events(h.dom0)
    return h, guest


def run(h: Harness, guest: int, requests: list[tuple[int, bytes]]) -> list[list[Packet]]:
    out = []
    for op, payload in requests:
        out.append(h.send(h.dom0, op, payload))
        out.append(h.drain(guest))
    return out


@settings(max_examples=300, deadline=None)
@given(REQUESTS)
def test_shortcut_answers_as_the_general_path(requests: list[tuple[int, bytes]]) -> None:
    fast, fast_guest = populated()
    slow, slow_guest = populated()
    slow.engine._answer_directly = lambda conn, packet: False  # type: ignore[method-assign]
    assert run(fast, fast_guest, requests) == run(slow, slow_guest, requests)
    assert {p: (n.value, n.perms, n.children) for p, n in fast.engine.tree.nodes.items()} == {
        p: (n.value, n.perms, n.children) for p, n in slow.engine.tree.nodes.items()
    }
    assert fast.consistent() == []


def spied(h: Harness) -> list[tuple[int, bool]]:
    """Record each call of the shortcut: (op, whether it answered)."""
    calls: list[tuple[int, bool]] = []
    original = Engine._answer_directly

    def spy(self: Engine, conn: object, packet: Packet) -> bool:
        answered = original(self, conn, packet)  # type: ignore[arg-type]
        calls.append((packet.type, answered))
        return answered

    h.engine._answer_directly = spy.__get__(h.engine)  # type: ignore[method-assign]
    return calls


def test_shortcut_is_taken_for_existing_nodes() -> None:
    h, _ = populated()
    calls = spied(h)
    assert h.read(h.dom0, "/a/b/c") == b"/a/b/c"
    h.write_ok(h.dom0, "/a/b/c", b"new")
    h.write_ok(h.dom0, "/a/b/d", b"created")  # a new node: the general path
    assert calls == [(Op.READ, True), (Op.WRITE, True), (Op.WRITE, False)]


def test_unprivileged_and_transactional_requests_take_the_general_path() -> None:
    h, guest = populated()
    calls = spied(h)
    assert h.err(guest, Op.READ, "/a/b/c") == "EACCES"
    tx = h.start(h.dom0)
    assert h.read(h.dom0, "/a", tx=tx) == b"A"
    h.write_ok(h.dom0, "/a", b"B", tx=tx)
    assert calls == [(Op.TRANSACTION_START, False)]
