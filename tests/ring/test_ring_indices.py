"""Pure index arithmetic (spec 7.2; XSA-38 in spec 10).

Every table row starts with the spec section it checks.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored.ring.indices import BadRingError, advance, checked_used, spans, used
from pyxenstored.ring.layout import RING_SIZE, RingError

U32 = 2**32
MAX = U32 - 1
u32 = st.integers(min_value=0, max_value=MAX)

USED = [
    # (spec, prod, cons, expected used or None for a bad ring)
    ("spec 7.2", 0, 0, 0),
    ("spec 7.2", 1024, 0, 1024),  # exactly full
    ("spec 7.2", 1025, 0, None),  # XSA-38: prod - cons > 1024
    ("spec 7.2", 5, MAX - 4, 10),  # prod wrapped past 2**32
    ("spec 7.2", 0, MAX, 1),
    ("spec 7.2", 1023, MAX, 1024),
    ("spec 7.2", 1024, MAX, None),
    ("spec 7.2", MAX, MAX, 0),
    ("spec 7.2", 0, 1, None),  # XSA-38: prod behind cons
    ("spec 7.2", 100, 200, None),
    ("spec 7.2", MAX, 0, None),  # XSA-38: huge values
    ("spec 7.2", 0x8000_0000, 0, None),
    ("spec 7.2", 0x8000_0400, 0x8000_0000, 1024),
]


@pytest.mark.parametrize(("spec", "prod", "cons", "expected"), USED)
def test_checked_used(spec: str, prod: int, cons: int, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(BadRingError) as info:
            checked_used(prod, cons)
        assert info.value.error == RingError.RINGIDX
    else:
        assert checked_used(prod, cons) == expected


@given(prod=u32, cons=u32)
def test_checked_used_agrees_with_modular_distance(prod: int, cons: int) -> None:
    # spec 7.2: valid iff (prod - cons) mod 2**32 <= 1024
    distance = (prod - cons) % U32
    assert used(prod, cons) == distance
    if distance <= RING_SIZE:
        assert checked_used(prod, cons) == distance
    else:
        with pytest.raises(BadRingError):
            checked_used(prod, cons)


@given(index=u32, n=st.integers(min_value=0, max_value=RING_SIZE))
def test_advance_wraps_and_spans_partition_the_bytes(index: int, n: int) -> None:
    # spec 7.2: byte k lives at buf[k & 1023]; indices wrap at 2**32
    assert advance(index, n) == (index + n) % U32
    offset, first, second = spans(index, n)
    assert offset == index % RING_SIZE
    assert first + second == n
    assert 0 <= offset + first <= RING_SIZE
    assert second == 0 or offset + first == RING_SIZE
    positions = list(range(offset, offset + first)) + list(range(second))
    assert positions == [(index + k) % U32 % RING_SIZE for k in range(n)]


SPANS = [
    # (spec, start, n, (offset, first, second))
    ("spec 7.2", 0, 1024, (0, 1024, 0)),
    ("spec 7.2", 1023, 2, (1023, 1, 1)),
    ("spec 7.2", 1024, 10, (0, 10, 0)),
    ("spec 7.2", MAX, 1024, (1023, 1, 1023)),
    ("spec 7.2", MAX - 99, 100, (924, 100, 0)),
    ("spec 7.2", 500, 0, (500, 0, 0)),
]


@pytest.mark.parametrize(("spec", "start", "n", "expected"), SPANS)
def test_spans_table(spec: str, start: int, n: int, expected: tuple[int, int, int]) -> None:
    assert spans(start, n) == expected
