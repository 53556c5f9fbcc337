"""The privileged READ shortcut (``Engine._named_node``) answers exactly as
the general path does, for every payload, existing node or not."""

from __future__ import annotations

from engine_harness import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.engine import Engine
from pyxenstored.protocol.ops import Op

PATHS = ["/", "/a", "/a/b", "/a/b/c", "/local/domain/0/x", "@releaseDomain", "@introduceDomain"]
PIECES = st.sampled_from(
    [b"/", b"a", b"b", b"/a", b"/a/b", b"/a/b/c", b"@releaseDomain", b"//", b"\0", b"x", b"-",
     b"\xff", b"/local/domain/0/x", b"@"]
)
PAYLOADS = st.one_of(
    st.lists(PIECES, max_size=5).map(b"".join),
    st.sampled_from([p.encode() + b"\0" for p in PATHS]),
    st.binary(max_size=12),
)


def populated() -> Harness:
    h = Harness()
    for path in ("/a/b/c", "/local/domain/0/x"):
        h.write_ok(h.dom0, path, path.encode())
    h.write_ok(h.dom0, "/a", b"A")
    return h


def reads(h: Harness, payloads: list[bytes]) -> list[tuple[int, bytes]]:
    out = []
    for payload in payloads:
        packets = h.send(h.dom0, Op.READ, payload)
        out.append((packets[-1].type, packets[-1].payload))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(PAYLOADS, min_size=1, max_size=8))
def test_shortcut_answers_as_the_general_path(payloads: list[bytes]) -> None:
    fast = populated()
    slow = populated()
    slow.engine._named_node = lambda payload: None  # type: ignore[method-assign]
    assert reads(fast, payloads) == reads(slow, payloads)


def test_shortcut_is_taken_for_an_existing_node() -> None:
    h = populated()
    calls: list[bytes] = []
    original = Engine._named_node

    def spy(self: Engine, payload: bytes) -> object:
        calls.append(payload)
        return original(self, payload)

    h.engine._named_node = spy.__get__(h.engine)  # type: ignore[method-assign]
    assert h.read(h.dom0, "/a/b/c") == b"/a/b/c"
    assert calls == [b"/a/b/c\0"]


def test_unprivileged_and_transactional_reads_take_the_general_path() -> None:
    h = populated()
    h.engine._named_node = None  # type: ignore[assignment,method-assign]  # would raise if called
    guest = h.introduce(5)
    assert h.err(guest, Op.READ, "/a/b/c") == "EACCES"
    tx = h.start(h.dom0)
    assert h.read(h.dom0, "/a", tx=tx) == b"A"
