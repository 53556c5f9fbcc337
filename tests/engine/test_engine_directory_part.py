"""DIRECTORY_PART (spec 1.5): generation, 4096-byte chunking, offsets."""

import pytest
from engine_harness import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxenstored.engine.engine import directory_part
from pyxenstored.protocol.ops import Op
from pyxenstored.store.node import Node
from pyxenstored.store.permissions import Perm


def c_send_directory_part(children: bytes, generation: int, off: int) -> bytes:
    """A transliteration of C ``send_directory_part`` (core.c)."""
    gen = f"{generation}".encode() + b"\0"
    genlen = len(gen)
    childlen = len(children)
    if off >= childlen:
        return gen + b"\0"
    maxlen = 4096 - genlen - 1
    length = 0
    pos = off
    while True:
        nul = children.index(b"\0", pos)
        if length + (nul - pos) >= maxlen:
            break
        length += nul - pos + 1
        pos = nul + 1
        if off + length == childlen:
            break
    data = gen + children[off : off + length]
    if off + length == childlen:
        data += b"\0"
    return data


def parts(h: Harness, path: str, offset: int, tx: int = 0) -> tuple[int, bytes]:
    payload = h.ok(h.dom0, Op.DIRECTORY_PART, path, str(offset), tx=tx)
    gen, _, rest = payload.partition(b"\0")
    return int(gen), rest


def read_all(h: Harness, path: str) -> list[str]:
    """The client loop: re-issue with offset += returned bytes until the double NUL."""
    offset, names, generation = 0, b"", None
    while True:
        gen, rest = parts(h, path, offset)
        assert generation in (None, gen)
        generation = gen
        if rest.endswith(b"\0\0") or rest == b"\0":
            names += rest[:-1]
            break
        names += rest
        offset += len(rest)
    return [name for name in names.decode().split("\0") if name]


def test_small_directory_in_one_chunk(h: Harness) -> None:
    for name in ("b", "a", "c"):
        h.write_ok(h.dom0, f"/dp/{name}")
    gen, rest = parts(h, "/dp", 0)
    assert rest == b"b\0a\0c\0\0"
    assert gen == h.engine.tree.get("/dp").generation


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        pytest.param(0, b"alpha\0beta\0\0", id="1.5:offset-0"),
        pytest.param(6, b"beta\0\0", id="1.5:offset-second-name"),
        pytest.param(2, b"pha\0beta\0\0", id="1.5:offset-mid-name"),
        pytest.param(11, b"\0", id="1.5:offset-at-end"),
        pytest.param(1000, b"\0", id="1.5:offset-past-end"),
        pytest.param(-1, b"\0", id="1.2:negative-offset-is-huge"),
        pytest.param("junk", b"alpha\0beta\0\0", id="1.2:offset-atoi-junk"),
    ],
)
def test_offsets(h: Harness, offset, expected: bytes) -> None:
    h.write_ok(h.dom0, "/dp/alpha")
    h.write_ok(h.dom0, "/dp/beta")
    payload = h.ok(h.dom0, Op.DIRECTORY_PART, "/dp", str(offset))
    gen, _, rest = payload.partition(b"\0")
    assert gen.isdigit()
    assert rest == expected


def test_empty_directory(h: Harness) -> None:
    h.write_ok(h.dom0, "/empty")
    _, rest = parts(h, "/empty", 0)
    assert rest == b"\0"


def test_chunking_at_4096(h: Harness) -> None:
    names = [f"{i:04d}" + "n" * 95 for i in range(120)]  # 100 bytes each, 12000 in total
    for name in names:
        h.write_ok(h.dom0, f"/big/{name}")
    # DIRECTORY itself is too big (XSA-72).
    assert h.err(h.dom0, Op.DIRECTORY, "/big") == "E2BIG"
    chunks = []
    offset = 0
    while True:
        payload = h.ok(h.dom0, Op.DIRECTORY_PART, "/big", str(offset))
        assert len(payload) <= 4096
        _, _, rest = payload.partition(b"\0")
        chunks.append(rest)
        if rest.endswith(b"\0\0") or rest == b"\0":
            break
        assert rest.endswith(b"\0")  # whole names only
        offset += len(rest)
    assert len(chunks) == 3
    assert read_all(h, "/big") == names


def test_generation_changes_with_children(h: Harness) -> None:
    h.write_ok(h.dom0, "/g/a")
    first, _ = parts(h, "/g", 0)
    h.write_ok(h.dom0, "/g/b")
    second, _ = parts(h, "/g", 0)
    assert second != first
    h.write_ok(h.dom0, "/other")
    assert parts(h, "/g", 0)[0] == second


def test_directory_part_permissions_and_errors(h: Harness) -> None:
    guest = h.introduce(5)
    h.write_ok(h.dom0, "/hidden/a")
    assert h.err(guest, Op.DIRECTORY_PART, "/hidden", "0") == "EACCES"
    assert h.err(h.dom0, Op.DIRECTORY_PART, "/nope", "0") == "ENOENT"
    assert h.err(h.dom0, Op.DIRECTORY_PART, "/hidden") == "EINVAL"


def test_directory_part_in_transaction_sees_private_children(h: Harness) -> None:
    h.write_ok(h.dom0, "/t")
    tx = h.start(h.dom0)
    h.write_ok(h.dom0, "/t/in", b"", tx=tx)
    assert parts(h, "/t", 0, tx=tx)[1] == b"in\0\0"
    assert parts(h, "/t", 0)[1] == b"\0"


names_strategy = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=300),
    unique=True,
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=names_strategy, generation=st.integers(0, 2**64 - 2), data=st.data())
def test_directory_part_matches_c(names: list[str], generation: int, data) -> None:
    node = Node(b"", (Perm(0, 0),), generation)
    for name in names:
        node.add_child(name)
    listing = node.child_list()
    offset = data.draw(st.integers(0, len(listing) + 5))
    reply = directory_part(node, offset)
    assert reply == c_send_directory_part(listing, generation, offset)
    assert len(reply) <= 4096
