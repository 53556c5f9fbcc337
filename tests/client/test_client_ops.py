"""Each op's exact request bytes and the decoding of its reply."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from client_fake_peer import FakePeer

from pyxenstored.client import Client, MalformedReply, XenstoreError
from pyxenstored.protocol.ops import Op

Call = Callable[[Client], Awaitable[Any]]

# (call, request type, request payload, reply payload, expected result)
CASES: list[tuple[str, Call, Op, bytes, bytes, Any]] = [
    ("read", lambda c: c.read("/a/b"), Op.READ, b"/a/b\0", b"val\0ue", b"val\0ue"),
    ("read-empty", lambda c: c.read("/a"), Op.READ, b"/a\0", b"", b""),
    ("write", lambda c: c.write("/a", b"x\0y"), Op.WRITE, b"/a\0x\0y", b"OK\0", None),
    ("write-str", lambda c: c.write("/a", "h\u00e9"), Op.WRITE, b"/a\0h\xc3\xa9", b"OK\0", None),
    ("mkdir", lambda c: c.mkdir("/d"), Op.MKDIR, b"/d\0", b"OK\0", None),
    ("rm", lambda c: c.rm("/d"), Op.RM, b"/d\0", b"OK\0", None),
    ("directory", lambda c: c.directory("/"), Op.DIRECTORY, b"/\0", b"a\0bc\0", ["a", "bc"]),
    ("directory-empty", lambda c: c.directory("/x"), Op.DIRECTORY, b"/x\0", b"", []),
    (
        "directory_part",
        lambda c: c.directory_part("/big", 4096),
        Op.DIRECTORY_PART,
        b"/big\x004096\0",
        b"42\0n1\0n2\0\0",
        (42, ["n1", "n2"], True),
    ),
    ("get_perms", lambda c: c.get_perms("/a"), Op.GET_PERMS, b"/a\0", b"n0\0r5\0", ["n0", "r5"]),
    (
        "set_perms",
        lambda c: c.set_perms("/a", ["n0", "r5", "b7"]),
        Op.SET_PERMS,
        b"/a\0n0\0r5\0b7\0",
        b"OK\0",
        None,
    ),
    ("unwatch", lambda c: c.unwatch("/a", "t"), Op.UNWATCH, b"/a\0t\0", b"OK\0", None),
    ("reset_watches", lambda c: c.reset_watches(), Op.RESET_WATCHES, b"\0", b"OK\0", None),
    (
        "transaction_start",
        lambda c: c.transaction_start(),
        Op.TRANSACTION_START,
        b"\0",
        b"17\0",
        17,
    ),
    (
        "introduce",
        lambda c: c.introduce(5, 1234, 9),
        Op.INTRODUCE,
        b"5\x001234\x009\0",
        b"OK\0",
        None,
    ),
    ("release", lambda c: c.release(5), Op.RELEASE, b"5\0", b"OK\0", None),
    ("resume", lambda c: c.resume(5), Op.RESUME, b"5\0", b"OK\0", None),
    (
        "get_domain_path",
        lambda c: c.get_domain_path(5),
        Op.GET_DOMAIN_PATH,
        b"5\0",
        b"/local/domain/5\0",
        "/local/domain/5",
    ),
    (
        "is_domain_introduced-T",
        lambda c: c.is_domain_introduced(5),
        Op.IS_DOMAIN_INTRODUCED,
        b"5\0",
        b"T\0",
        True,
    ),
    (
        "is_domain_introduced-F",
        lambda c: c.is_domain_introduced(6),
        Op.IS_DOMAIN_INTRODUCED,
        b"6\0",
        b"F\0",
        False,
    ),
    ("set_target", lambda c: c.set_target(5, 7), Op.SET_TARGET, b"5\x007\0", b"OK\0", None),
    ("get_feature-own", lambda c: c.get_feature(), Op.GET_FEATURE, b"", b"14\0", 14),
    ("get_feature-domain", lambda c: c.get_feature(3), Op.GET_FEATURE, b"3\0", b"6\0", 6),
    ("set_feature", lambda c: c.set_feature(3, 6), Op.SET_FEATURE, b"3\x006\0", b"OK\0", None),
    (
        "get_quota-names",
        lambda c: c.get_quota(),
        Op.GET_QUOTA,
        b"",
        b"nodes watches soft-memory\0",
        "nodes watches soft-memory",
    ),
    (
        "quota_names",
        lambda c: c.quota_names(),
        Op.GET_QUOTA,
        b"",
        b"nodes watches\0",
        ["nodes", "watches"],
    ),
    (
        "get_quota-global",
        lambda c: c.get_quota(name="nodes"),
        Op.GET_QUOTA,
        b"nodes\0",
        b"1000\0",
        1000,
    ),
    (
        "get_quota-domain",
        lambda c: c.get_quota(4, "soft-memory"),
        Op.GET_QUOTA,
        b"4\0soft-memory\0",
        b"2097152\0",
        2097152,
    ),
    (
        "set_quota-global",
        lambda c: c.set_quota(None, "nodes", 20),
        Op.SET_QUOTA,
        b"nodes\x0020\0",
        b"OK\0",
        None,
    ),
    (
        "set_quota-domain",
        lambda c: c.set_quota(4, "nodes", 0),
        Op.SET_QUOTA,
        b"4\0nodes\x000\0",
        b"OK\0",
        None,
    ),
    ("control", lambda c: c.control("check"), Op.CONTROL, b"check\0", b"OK\0", "OK"),
    (
        "control-args",
        lambda c: c.control("quota", "set", b"nodes", "7"),
        Op.CONTROL,
        b"quota\0set\0nodes\x007\0",
        b"nodes 7\n\0",
        "nodes 7\n",
    ),
    ("request-raw", lambda c: c.request(Op.READ, b"/r\0"), Op.READ, b"/r\0", b"raw", b"raw"),
]


@pytest.mark.parametrize(
    ("call", "op", "payload", "reply", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_op_encoding_and_reply(
    pair: tuple[Client, FakePeer],
    call: Call,
    op: Op,
    payload: bytes,
    reply: bytes,
    expected: Any,
) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, reply)
        result = await call(client)
    (request,) = peer.requests
    assert request.type == op
    assert request.payload == payload
    assert request.tx_id == 0
    assert request.req_id != 0
    assert result == expected


async def test_transaction_end_carries_tx_id(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer)
        await client.transaction_end(9, commit=True)
        nursery.start_soon(peer.answer)
        await client.transaction_end(10, commit=False)
    commit, abort = peer.requests
    assert (commit.type, commit.tx_id, commit.payload) == (Op.TRANSACTION_END, 9, b"T\0")
    assert (abort.type, abort.tx_id, abort.payload) == (Op.TRANSACTION_END, 10, b"F\0")


async def test_watch_with_depth_sends_third_argument(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:

        async def answer_both() -> None:
            await peer.answer()
            await peer.answer()

        nursery.start_soon(answer_both)
        async with client.watch("@releaseDomain", "tok", depth=1):
            pass
    watch, unwatch = peer.requests
    assert (watch.type, watch.payload) == (Op.WATCH, b"@releaseDomain\0tok\x001\0")
    assert (unwatch.type, unwatch.payload) == (Op.UNWATCH, b"@releaseDomain\0tok\0")


@pytest.mark.parametrize("name", ["ENOENT", "EACCES", "EAGAIN", "E2BIG", "ENOSYS"])
async def test_error_reply_raises_xenstore_error(pair: tuple[Client, FakePeer], name: str) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:

        async def fail() -> None:
            request = await peer.receive()
            await peer.error(request, name)

        nursery.start_soon(fail)
        with pytest.raises(XenstoreError) as info:
            await client.read("/missing")
    assert info.value.name == name


async def test_unknown_error_name_maps_to_einval(pair: tuple[Client, FakePeer]) -> None:
    # libxenstore does the same with a name outside the table (spec 1.4).
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, b"EQUOTA\0", Op.ERROR)
        with pytest.raises(XenstoreError) as info:
            await client.write("/a", b"1")
    assert info.value.name == "EINVAL"


@pytest.mark.parametrize(
    ("call", "reply"),
    [
        (lambda c: c.transaction_start(), b"abc\0"),
        (lambda c: c.is_domain_introduced(1), b"OK\0"),
        (lambda c: c.get_feature(), b"\0"),
        (lambda c: c.directory_part("/", 0), b"no-generation"),
    ],
)
async def test_malformed_reply(pair: tuple[Client, FakePeer], call: Call, reply: bytes) -> None:
    client, peer = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, reply)
        with pytest.raises(MalformedReply):
            await call(client)


async def test_oversized_request_is_refused_locally(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    with pytest.raises(XenstoreError) as info:
        await client.write("/a", b"x" * 4094)  # "/a\0" + 4094 = 4097 bytes
    assert info.value.name == "E2BIG"
    assert await peer.idle()
    # Exactly the limit is fine.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer)
        await client.write("/a", b"x" * 4093)
    assert len(peer.requests[0].payload) == 4096


async def test_bad_arguments_send_nothing(pair: tuple[Client, FakePeer]) -> None:
    client, peer = pair
    with pytest.raises(ValueError):
        await client.read("/a\0b")
    with pytest.raises(ValueError):
        await client.get_quota(3)  # type: ignore[call-overload]  # a domid needs a name
    with pytest.raises(TypeError):
        await client.set_perms("/a", "n0")
    with pytest.raises(ValueError):
        await client.control()
    assert await peer.idle()
