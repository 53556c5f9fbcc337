"""The trace file and the engine's CONTROL effects, as the shell carries them out."""

import logging
import os
import stat

import pytest
import trio
from server_harness import RawClient, running_server

from pyxenstored.config import Config
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.ops import Op
from pyxenstored.protocol.wire import Packet, encode
from pyxenstored.server import Tracer
from pyxenstored.server.trace import format_packet, op_name, quote_payload


def _lines(path: str) -> list[str]:
    with open(path) as file:
        return file.read().splitlines()


def _io_lines(path: str) -> list[str]:
    """IN/OUT lines without their timestamp."""
    out = []
    for line in _lines(path):
        for marker in (" IN  conn ", " OUT conn "):
            if marker in line:
                out.append(line[line.index(marker) + 1 :])
    return out


async def test_trace_lines_for_requests_replies_and_events(sdir: str) -> None:
    trace = os.path.join(sdir, "trace")
    path = os.path.join(sdir, "sock")
    async with running_server(sdir, tracer=Tracer(trace)):
        client = await RawClient.connect(path)
        await client.write("/local/domain/0/name", b"Domain-0")
        await client.send(Op.READ, b"/local/domain/0/name\0", req_id=7)
        await client.receive()
        await client.request(Op.WATCH, b"/w\0tok\0")
        await client.receive()
        await client.request(Op.READ, b"/missing\0")
        await client.aclose()
    assert stat.S_IMODE(os.stat(trace).st_mode) == 0o600
    lines = _io_lines(trace)
    assert 'IN  conn 1 READ req 7 tx 0 "/local/domain/0/name\\0"' in lines
    assert 'OUT conn 1 READ req 7 tx 0 "Domain-0"' in lines
    assert 'IN  conn 1 WRITE req 1 tx 0 "/local/domain/0/name\\0Domain-0"' in lines
    assert 'OUT conn 1 WATCH_EVENT req 0 tx 0 "/w\\0tok\\0"' in lines
    assert 'OUT conn 1 ERROR req 3 tx 0 "ENOENT\\0"' in lines
    everything = _lines(trace)
    assert everything[:2] == ["", "***"]
    assert any(line.endswith("NEW conn 1") or " NEW conn 1 " in line for line in everything)
    assert any(line.endswith("END conn 1") for line in everything)


async def test_io_switch_off_writes_no_io_lines(sdir: str) -> None:
    trace = os.path.join(sdir, "trace")
    async with running_server(sdir, tracer=Tracer(trace, switches={"obj"})):
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        await client.read("/tool")
        await client.aclose()
    assert _io_lines(trace) == []
    assert any("NEW conn" in line for line in _lines(trace))


async def test_no_trace_file_no_tracing(sdir: str) -> None:
    async with running_server(sdir) as server:
        assert not server.tracer.io and not server.tracer.obj
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        await client.read("/tool")
        await client.aclose()
    assert os.listdir(sdir) == []


async def test_control_logfile_relative_goes_to_state_dir_and_log_off(sdir: str) -> None:
    state = os.path.join(sdir, "state")
    os.mkdir(state)
    async with running_server(sdir, state_dir=state) as server:
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        reply = await client.control("logfile", "t.log")
        assert reply.payload == b"OK\0"
        assert server.tracer.is_open
        await client.read("/tool")
        reply = await client.control("log", "off")
        assert reply.payload == b"OK\0"
        assert not server.tracer.is_open
        await client.request(Op.READ, b"/after-off\0")
        reply = await client.control("log", "on")
        assert server.tracer.is_open
        await client.aclose()
    lines = _io_lines(os.path.join(state, "t.log"))
    assert any('READ req 2 tx 0 "/tool\\0"' in line for line in lines)
    assert not any("after-off" in line for line in lines)


async def test_control_log_switch_reaches_tracer(sdir: str) -> None:
    trace = os.path.join(sdir, "trace")
    async with running_server(sdir, tracer=Tracer(trace)) as server:
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        assert (await client.control("log", "-io")).payload == b"OK\0"
        assert not server.tracer.io
        await client.request(Op.READ, b"/quiet\0")
        assert (await client.control("log", "+io")).payload == b"OK\0"
        assert server.tracer.io
        await client.request(Op.READ, b"/loud\0")
        listing = (await client.control("log")).payload
        assert b"io" in listing
        await client.aclose()
    text = "\n".join(_io_lines(trace))
    assert "/loud" in text and "/quiet" not in text


async def test_trace_file_from_command_line_known_to_engine(sdir: str) -> None:
    """``-T`` lets CONTROL ``memreport`` (no file) and ``log on`` work, as in C."""
    trace = os.path.join(sdir, "trace")
    config = Config(trace_file=trace)
    async with running_server(sdir, config) as server:
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        assert (await client.control("memreport")).payload == b"OK\0"
        assert (await client.control("log", "off")).payload == b"OK\0"
        assert not server.tracer.is_open
        assert (await client.control("log", "on")).payload == b"OK\0"
        assert server.tracer.is_open
        await client.aclose()
    assert any(line.startswith("nodes: ") for line in _lines(trace))


async def test_control_memreport_to_file_and_print_to_log(
    sdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = os.path.join(sdir, "state")
    os.mkdir(state)
    async with running_server(sdir, state_dir=state):
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        with caplog.at_level(logging.INFO, logger="pyxenstored"):
            assert (await client.control("print", "hello there")).payload == b"OK\0"
        assert (await client.control("memreport", "mem.txt")).payload == b"OK\0"
        await client.aclose()
    assert any("control: hello there" in r.getMessage() for r in caplog.records)
    report = os.path.join(state, "mem.txt")
    assert stat.S_IMODE(os.stat(report).st_mode) == 0o600
    with open(report) as file:
        assert file.read().startswith("nodes: ")


async def test_trace_reopen_after_rotation(sdir: str) -> None:
    trace = os.path.join(sdir, "trace")
    async with running_server(sdir, tracer=Tracer(trace)) as server:
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        await client.read("/tool")
        os.rename(trace, trace + ".1")
        server.tracer.reopen()  # what SIGHUP does
        await client.read("/tool/xenstored")
        await client.aclose()
    assert any("/tool/xenstored" in line for line in _io_lines(trace))
    assert not any("/tool/xenstored" in line for line in _io_lines(trace + ".1"))


async def test_unwritable_trace_file_does_not_stop_the_daemon(sdir: str) -> None:
    tracer = Tracer(os.path.join(sdir, "no", "such", "dir", "trace"))
    assert not tracer.is_open
    async with running_server(sdir, tracer=tracer):
        client = await RawClient.connect(os.path.join(sdir, "sock"))
        assert await client.read("/tool") == b""
        await client.aclose()


def test_formatting() -> None:
    assert op_name(Op.READ) == "READ"
    assert op_name(99) == "TYPE_99"
    assert quote_payload(b'a\0"\\\n\xff') == '"a\\0\\"\\\\\\x0a\\xff"'
    assert (
        format_packet("IN", 3, Packet(Op.READ, 7, 0, b"/local/domain/0/name\0"))
        == 'IN  conn 3 READ req 7 tx 0 "/local/domain/0/name\\0"'
    )


def test_output_decoding_spans_chunks(sdir: str) -> None:
    trace = os.path.join(sdir, "trace")
    tracer = Tracer(trace)
    decoder = Decoder()
    data = encode(Op.READ, 1, 0, b"abc") + encode(Op.WATCH_EVENT, 0, 0, b"/p\0t\0")
    tracer.output(5, data[:10], decoder)
    tracer.output(5, data[10:], decoder)
    tracer.close()
    assert _io_lines(trace) == [
        'OUT conn 5 READ req 1 tx 0 "abc"',
        'OUT conn 5 WATCH_EVENT req 0 tx 0 "/p\\0t\\0"',
    ]


async def test_trio_checkpoint_sanity() -> None:
    await trio.sleep(0)
