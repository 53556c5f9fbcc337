"""Deferred publication: a journaling daemon moves the indices it owns only
after its journal write, and re-publishes them after a crash (issue 5)."""

from __future__ import annotations

import pytest
from ring_support import U32, indices, new_page

from pyxenstored.ring.layout import RING_SIZE
from pyxenstored.ring.ring import ServerRing


def deferred_pair(start: int = 0) -> tuple[ServerRing, object]:
    _, page = new_page()
    iface = page.iface
    iface.req_cons = iface.req_prod = start % U32
    iface.rsp_cons = iface.rsp_prod = start % U32
    server = ServerRing(page, deferred=True)
    server.connect()
    return server, page


@pytest.mark.parametrize("start", [0, U32 - 3, 7 * RING_SIZE - 1])
def test_transfers_stay_private_until_published(start: int) -> None:
    server, page = deferred_pair(start)
    page.iface.req_prod = (start + 10) % U32  # the guest produced 10 bytes
    assert len(server.read_requests(4)) == 4
    assert len(server.read_requests()) == 6  # continues from the private index
    assert server.write_responses(b"reply") == 5
    assert server.write_responses(b"more") == 4
    assert indices(page) == (start % U32, (start + 10) % U32, start % U32, start % U32)
    assert server.positions() == ((start + 10) % U32, (start + 9) % U32)
    server.publish()
    assert indices(page) == ((start + 10) % U32,) * 2 + (start % U32, (start + 9) % U32)
    assert server.positions() == ((start + 10) % U32, (start + 9) % U32)


def test_private_space_accounts_for_unpublished_replies() -> None:
    server, _ = deferred_pair()
    assert server.write_responses(b"x" * 1000) == 1000
    assert server.write_responses(b"y" * 100) == RING_SIZE - 1000


@pytest.mark.parametrize(
    ("page_at", "journal_at", "expected"),
    [
        (100, 120, 120),  # died between journal and publish: catch up
        (120, 120, 120),  # published already
        (0, 5000, 0),  # reset since (a reconnect): left alone
        (120, 100, 120),  # never backwards
    ],
)
def test_resume_only_moves_forward_within_a_ring(page_at: int, journal_at: int,
                                                 expected: int) -> None:
    server, page = deferred_pair()
    iface = page.iface
    iface.req_cons = iface.req_prod = page_at
    iface.rsp_cons = iface.rsp_prod = page_at
    iface.req_prod = max(page_at, journal_at)
    server.resume(journal_at, journal_at)
    assert (iface.req_cons, iface.rsp_prod) == (expected, expected)


def test_reconnect_forgets_unpublished_moves() -> None:
    server, page = deferred_pair()
    page.iface.req_prod = 8
    server.read_requests()
    server.complete_reconnect()
    server.publish()
    assert indices(page) == (0, 0, 0, 0)
