"""Outbox: reply/event queueing, XSA-324 drop, duplicate collapse, byte limit (spec 5.3, 5.7)."""

from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import encode
from pyxenstored.watches import Outbox


def packets(box: Outbox) -> list[tuple[int, bytes]]:
    return [(p.type, p.payload) for p in Decoder().feed(box.take())]


def test_replies_and_events_in_order() -> None:
    box = Outbox(10_000)
    assert box.event("/a", "t")
    box.reply(encode(Op.WRITE, 1, 0, b"OK\0"))
    assert box.replies == 1
    assert packets(box) == [(Op.WATCH_EVENT, b"/a\0t\0"), (Op.WRITE, b"OK\0")]
    assert box.size == 0 and box.replies == 0


def test_duplicate_pending_event_collapses_until_taken() -> None:
    box = Outbox(10_000)
    assert box.event("/a", "t")
    assert not box.event("/a", "t")
    assert box.event("/a", "u")
    assert box.event("/b", "t")
    assert len(packets(box)) == 3
    assert box.event("/a", "t")


def test_special_events_never_collapse() -> None:
    """XSA-326: ``@`` events are exempt."""
    box = Outbox(10_000)
    assert box.event("@releaseDomain", "t")
    assert box.event("@releaseDomain", "t")
    assert len(packets(box)) == 2


def test_event_over_4096_is_dropped_xsa324() -> None:
    box = Outbox(100_000)
    token = "x" * 4000
    # C ``send_event``: strlen(path) + 1 + strlen(token) + 1 > 4096 is dropped.
    assert box.event("/" + "a" * 93, token)  # 94 + 1 + 4000 + 1 = 4096
    assert not box.event("/" + "a" * 94, token)  # 4097
    assert box.dropped_events == 1
    assert len(packets(box)) == 1


def test_byte_limit_drops_events_but_not_replies() -> None:
    box = Outbox(64)
    assert box.event("/a", "t")  # 16 + 5 = 21 bytes
    assert box.event("/b", "t")
    assert box.event("/c", "t")
    assert not box.event("/d", "t")
    assert box.dropped_events == 1
    for req in range(5):
        box.reply(encode(Op.READ, req, 0, b"x" * 100))
    assert box.replies == 5
    assert not box.event("/e", "t")
    assert len(packets(box)) == 8


def test_latin1_round_trip() -> None:
    box = Outbox(10_000)
    assert box.event("/a", "\xff\x01")
    assert packets(box) == [(Op.WATCH_EVENT, b"/a\0\xff\x01\0")]


def test_clear_forgets_everything() -> None:
    box = Outbox(10_000)
    box.event("/a", "t")
    box.reply(b"x")
    box.clear()
    assert box.take() == b""
    assert box.event("/a", "t")


def test_take_with_a_byte_budget_returns_whole_messages() -> None:
    """A ring takes what fits: whole messages, at least one (spec 7.2 partial writes)."""
    box = Outbox(10_000)
    box.reply(encode(Op.READ, 1, 0, b"x" * 100))  # 116 bytes
    assert box.event("/a", "t")  # 21 bytes
    box.reply(encode(Op.READ, 2, 0, b"y" * 2000))
    first = box.take(120)
    assert Decoder().feed(first)[0].payload == b"x" * 100 and len(first) == 116
    assert box.replies == 1 and box.event("/a", "t") is False  # still pending
    assert len(box.take(10)) == 21  # one message even over the budget
    assert box.event("/a", "t")  # taken: no longer collapses
    assert len(packets(box)) == 2 and box.size == 0 and box.replies == 0


def test_expire_drops_old_events_only() -> None:
    """Spec 5.7: unsent events older than the timeout go; replies always stay."""
    box = Outbox(10_000)
    assert box.event("/old", "t", now=1.0)
    box.reply(encode(Op.WRITE, 1, 0, b"OK\0"), now=1.0)
    assert box.event("/new", "t", now=30.0)
    assert box.expire_events(queued_before=10.0) == 1
    assert box.dropped_events == 1
    assert [payload for _, payload in packets(box)] == [b"OK\0", b"/new\0t\0"]
    assert box.event("/old", "t")  # its pending mark went with it


def test_byte_limit_counts_the_header() -> None:
    """XSA-326: the cap bounds what is queued on the wire, header included."""
    box = Outbox(42)
    assert box.event("/a", "t")  # 16 + 5
    assert box.event("/b", "t")  # 42 in all: at the cap
    assert not box.event("/c", "t")
    assert box.size == 42
