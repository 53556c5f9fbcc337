"""Codec and engine fuzzing, in process (no daemon, no I/O).

Two properties:

* ``check_decoder(chunks)``: arbitrary bytes in arbitrary chunks through
  ``Decoder`` give only valid packets or ``ProtocolError``, never another
  exception; the packets re-encode to a prefix of the stream; after an
  error every later ``feed`` (even ``feed(b"")``) raises it again.
* ``check_engine(packets)``: every packet through a fresh ``Engine``, from a
  privileged socket connection and from an introduced guest (domain 5),
  never raises, and ``check_tree`` finds nothing wrong afterwards.

``python -m fuzz codec --examples N`` runs both with hypothesis.
``python -m fuzz codec --atheris [libFuzzer args]`` runs a coverage-guided
harness over the same two properties if ``atheris`` is importable
(``.venv/bin/pip install atheris``; it is not a project dependency).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.strategies import byte_streams, packets
from pyxenstored.config import Config
from pyxenstored.engine import Engine
from pyxenstored.protocol.decoder import Decoder
from pyxenstored.protocol.errors import ProtocolError
from pyxenstored.protocol.wire import HEADER, PAYLOAD_MAX, Packet
from pyxenstored.store.consistency import check_tree

GUEST = 5


def check_decoder(chunks: Sequence[bytes]) -> list[Packet]:
    """Feed ``chunks``; assert the decoder's contract; return the packets."""
    decoder = Decoder()
    out: list[Packet] = []
    error: ProtocolError | None = None
    for chunk in [*chunks, b""]:
        try:
            got = decoder.feed(chunk)
        except ProtocolError as exc:
            error = exc
            break
        for packet in got:
            assert isinstance(packet, Packet)
            assert len(packet.payload) <= PAYLOAD_MAX
        out.extend(got)
    stream = b"".join(chunks)
    encoded = b"".join(p.encode() for p in out)
    assert stream.startswith(encoded), "decoded packets are not a prefix of the stream"
    rest = stream[len(encoded):]
    if error is not None:
        # The error is sticky, and it is about the header right after the packets.
        try:
            decoder.feed(b"")
        except ProtocolError:
            pass
        else:  # pragma: no cover - a failure
            raise AssertionError("ProtocolError was not sticky")
        assert len(rest) >= HEADER.size and HEADER.unpack_from(rest)[3] > PAYLOAD_MAX
    else:
        assert decoder.pending == rest
        if len(rest) >= HEADER.size:
            assert HEADER.unpack_from(rest)[3] > len(rest) - HEADER.size
    return out


def fresh_engine() -> tuple[Engine, int, int]:
    """An engine with a dom0 socket connection and guest 5 introduced."""
    engine = Engine(Config())
    sock = engine.connect_socket()
    engine.handle(sock, Packet(8, 1, 0, f"{GUEST}\x001\x007\x00".encode()))
    engine.take_output(sock)
    domain = engine.domains.get(GUEST)
    assert domain is not None and domain.conn_id is not None
    return engine, sock, domain.conn_id


def check_engine(sequence: Sequence[tuple[int, Packet]]) -> None:
    """Run (connection index, packet) pairs: 0 = dom0 socket, 1 = guest 5."""
    engine, sock, guest = fresh_engine()
    conns = (sock, guest)
    for which, packet in sequence:
        conn = conns[which % 2]
        if conn not in engine.connections:
            continue  # the guest was RELEASEd
        engine.handle(conn, packet)
        for c in list(engine.connections):
            engine.take_output(c)
        engine.take_effects()
    problems = check_tree(engine.tree)
    assert problems == [], problems


def run_hypothesis(examples: int, seed: int | None = None) -> None:
    """Both properties with ``examples`` generated inputs each."""
    cfg = settings(max_examples=examples, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))

    @cfg
    @given(byte_streams())
    def decoder_prop(chunks: list[bytes]) -> None:
        check_decoder(chunks)

    @cfg
    @given(st.lists(st.tuples(st.integers(0, 1), packets(small=True)), max_size=30))
    def engine_small(seq: list[tuple[int, Packet]]) -> None:
        check_engine(seq)

    @cfg
    @given(st.lists(st.tuples(st.integers(0, 1), packets()), max_size=10))
    def engine_wide(seq: list[tuple[int, Packet]]) -> None:
        check_engine(seq)

    for prop in (decoder_prop, engine_small, engine_wide):
        if seed is not None:
            from hypothesis import seed as hseed

            prop = hseed(seed)(prop)
        prop()
        print(f"codec: {prop.__name__}: {examples} examples OK")


def run_atheris(argv: list[str]) -> int:
    """libFuzzer-driven harness; returns 2 if atheris is not installed."""
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed (.venv/bin/pip install atheris)", file=sys.stderr)
        return 2

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        mode = fdp.ConsumeIntInRange(0, 1)
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())
        if mode == 0:
            cuts = list(raw[:4])
            from fuzz.strategies import chunked

            check_decoder(chunked(raw[4:], cuts))
            return
        try:
            pkts = Decoder().feed(raw)
        except ProtocolError:
            return
        check_engine([(p.req_id & 1, p) for p in pkts])

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()
    return 0
