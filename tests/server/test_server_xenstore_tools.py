"""Debian's real xenstore-* clients against the daemon (skipped when not installed)."""

import os
import shutil

import pytest
import trio
from server_harness import running_server

pytestmark = pytest.mark.skipif(
    shutil.which("xenstore-write") is None, reason="xenstore-utils not installed"
)


async def _tool(sock: str, *argv: str) -> str:
    env = dict(os.environ, XENSTORED_PATH=sock)
    with trio.fail_after(20):
        result = await trio.run_process(list(argv), env=env, capture_stdout=True)
    return result.stdout.decode()


async def test_write_read_ls_rm(sdir: str) -> None:
    sock = os.path.join(sdir, "sock")
    async with running_server(sdir):
        await _tool(sock, "xenstore-write", "/vm/name", "guest", "/vm/uuid", "1234")
        assert await _tool(sock, "xenstore-read", "/vm/name") == "guest\n"
        listing = await _tool(sock, "xenstore-ls", "/vm")
        assert 'name = "guest"' in listing and 'uuid = "1234"' in listing
        await _tool(sock, "xenstore-rm", "/vm")
        assert "vm" not in (await _tool(sock, "xenstore-list", "/")).split()


async def test_many_tools_at_once(sdir: str) -> None:
    sock = os.path.join(sdir, "sock")
    async with running_server(sdir):
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(_tool, sock, "xenstore-write", f"/par/{i}", str(i))
        for i in range(10):
            assert await _tool(sock, "xenstore-read", f"/par/{i}") == f"{i}\n"
