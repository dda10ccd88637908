"""Bad input to the protocol layer: parsers raise only their typed errors, analyzers nothing.

Hypothesis drives arbitrary and mutated bytes through every parser, random chunkings and
gaps through every analyzer, and mutated payloads of real flows through the whole pipeline
(whose guard would turn an analyzer exception into a ``protocol_analyzer_error`` weird: the
tests require that none ever appears).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2z.agent.capture import RawPacket, open_capture
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols import (
    DnsAnalyzer,
    FlowIdent,
    HttpAnalyzer,
    ProtocolConfig,
    ProtocolError,
    StreamReassembler,
    TlsAnalyzer,
    basic_credentials,
    detect_tcp,
    ja3,
    ja3s,
    ja4,
    looks_like_dns,
    parse_client_hello,
    parse_dns,
    parse_request_head,
    parse_response_head,
    parse_server_hello,
)
from a2z.agent.protocols.dns import read_name
from a2z.records import Dns, Http, Record, Ssl, Weird
from tests.agent.protocol_builder import (
    client_hello,
    dns_message,
    dns_name,
    handshake,
    server_hello,
    tls_record,
)

DATA = Path(__file__).resolve().parents[1] / "data"
DEMO = Path(__file__).resolve().parents[2] / "src/a2z/demo/data/attack.pcap"

FAST = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEEDS: list[bytes] = [
    dns_message(1, questions=[(dns_name("www.example.test"), 1)]),
    dns_message(
        2,
        response=True,
        questions=[(dns_name("a.test"), 16)],
        answers=[(b"\xc0\x0c", 16, 60, b"\x03abc"), (b"\xc0\x0c", 5, 9, b"\x01b\xc0\x0c")],
    ),
    b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YTpi\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    tls_record(22, handshake(1, client_hello())),
    tls_record(22, handshake(2, server_hello()), version=0x0303),
]
CLIENT_HELLO = client_hello()
SERVER_HELLO = server_hello(alpn=b"h2", session_id=b"\x01" * 32)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


def _bytes_for(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=300), mutated(seed))


def _only_protocol_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse(data)


# -- pure parsers ----------------------------------------------------------------------------


@FAST
@given(data=_bytes_for(SEEDS[1]), partial=st.booleans())
def test_parse_dns_raises_only_protocol_errors(data: bytes, partial: bool) -> None:
    _only_protocol_errors(lambda d: parse_dns(d, partial=partial), data)
    looks_like_dns(data, standard_port=partial)


@FAST
@given(data=st.binary(max_size=300), pos=st.integers(0, 310))
def test_read_name_raises_only_protocol_errors(data: bytes, pos: int) -> None:
    with contextlib.suppress(ProtocolError):
        name, end = read_name(data, pos)
        assert end <= len(data)
        assert len(name) <= 4 * 255


@FAST
@given(data=st.one_of(_bytes_for(SEEDS[2]), _bytes_for(SEEDS[3])))
def test_http_head_parsers_raise_only_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(parse_request_head, data)
    _only_protocol_errors(parse_response_head, data)
    basic_credentials("Basic " + data.decode("latin-1"))


@FAST
@given(data=st.one_of(_bytes_for(CLIENT_HELLO), _bytes_for(SERVER_HELLO)))
def test_tls_hello_parsers_raise_only_protocol_errors_and_fingerprint_whatever_parses(
    data: bytes,
) -> None:
    with contextlib.suppress(ProtocolError):
        hello = parse_client_hello(data)
        assert len(ja3(hello)) == 32
        assert ja4(hello).count("_") == 2
    with contextlib.suppress(ProtocolError):
        assert len(ja3s(parse_server_hello(data))) == 32


@FAST
@given(data=st.one_of(*(_bytes_for(seed) for seed in SEEDS)), is_orig=st.booleans())
def test_service_detection_always_answers(data: bytes, is_orig: bool) -> None:
    assert detect_tcp(data, is_orig, (40000, 53)) in {"http", "ssl", "dns", None, False}


# -- the stream reassembler ---------------------------------------------------------------------


@FAST
@given(
    payload=st.binary(min_size=1, max_size=400),
    cuts=st.lists(st.integers(0, 400), max_size=12),
    order=st.randoms(use_true_random=False),
    drop=st.sets(st.integers(0, 12), max_size=3),
    start=st.integers(0, 2**32 - 1),
)
def test_reassembler_delivers_the_stream_in_order_with_holes_as_gaps(
    payload: bytes, cuts: list[int], order: object, drop: set[int], start: int
) -> None:
    bounds = sorted({0, len(payload), *(c for c in cuts if c < len(payload))})
    segments = [(bounds[i], payload[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]
    sent = [s for i, s in enumerate(segments) if i not in drop]
    sent += sent[: len(sent) // 2]  # retransmissions
    order.shuffle(sent)  # type: ignore[attr-defined]
    stream = StreamReassembler(start, max_pending=256, max_segments=8)
    chunks = [c for off, data in sent for c in stream.add(start + off, data, len(data))]
    chunks += stream.flush()
    rebuilt = b"".join(c if isinstance(c, bytes) else b"\0" * c for c in chunks)
    assert len(rebuilt) <= len(payload)
    for (off, data), i in zip(segments, range(len(segments)), strict=True):
        if i not in drop and off + len(data) <= len(rebuilt):
            assert rebuilt[off : off + len(data)] == data


# -- analyzers fed chunks and gaps ---------------------------------------------------------------

IDENT = FlowIdent("Ctest", "10.0.0.1", 40000, "10.0.0.2", 80)


@FAST
@given(
    script=st.lists(
        st.tuples(st.booleans(), st.one_of(st.integers(1, 5000), *(mutated(s) for s in SEEDS))),
        max_size=20,
    ),
    which=st.sampled_from(["dns", "http", "tls"]),
)
def test_analyzers_never_raise_on_any_chunks_and_gaps(
    script: list[tuple[bool, bytes | int]], which: str
) -> None:
    config = ProtocolConfig(max_header_bytes=512, max_handshake_bytes=512)
    analyzer: DnsAnalyzer | HttpAnalyzer | TlsAnalyzer
    if which == "dns":
        analyzer = DnsAnalyzer(IDENT, config, "tcp")
    elif which == "http":
        analyzer = HttpAnalyzer(IDENT, config)
    else:
        analyzer = TlsAnalyzer(IDENT, config)
    for ts, (is_orig, item) in enumerate(script):
        if analyzer.done:
            break
        if isinstance(item, int):
            analyzer.gap(float(ts), is_orig, item)
        else:
            analyzer.data(float(ts), is_orig, item)
    analyzer.finish(99.0)
    kinds = {"dns": Dns, "http": Http, "tls": Ssl}
    assert all(isinstance(r, kinds[which]) for r in analyzer.records)
    assert all(isinstance(e, ProtocolError) for e in analyzer.weirds)


@FAST
@given(datagrams=st.lists(st.tuples(st.booleans(), mutated(SEEDS[1])), max_size=12))
def test_dns_analyzer_never_raises_on_datagrams(datagrams: list[tuple[bool, bytes]]) -> None:
    analyzer = DnsAnalyzer(IDENT, ProtocolConfig(max_pending_dns=3), "udp")
    for ts, (is_orig, data) in enumerate(datagrams):
        analyzer.datagram(float(ts), is_orig, data)
    analyzer.finish(99.0)
    assert all(isinstance(r, Dns) for r in analyzer.records)


# -- the whole pipeline on mutated real flows ---------------------------------------------------

APP_PACKETS = [
    pkt
    for path in (DEMO, DATA / "dns_tcp.pcap", DATA / "tls12.pcap", DATA / "zeek-http-get.pcap")
    for pkt in open_capture(path)
    if len(pkt.data) > 66  # frames with payload (Ethernet + IP + TCP/UDP headers)
][:600]


@st.composite
def payload_mutations(draw: st.DrawFn) -> list[RawPacket]:
    start = draw(st.integers(0, len(APP_PACKETS) - 40))
    out: list[RawPacket] = []
    for pkt in APP_PACKETS[start : start + draw(st.integers(1, 40))]:
        data = bytearray(pkt.data)
        if draw(st.booleans()):
            for _ in range(draw(st.integers(1, 4))):
                pos = draw(st.integers(54, len(data) - 1))  # payload and TCP header bytes
                data[pos] = draw(st.integers(0, 255))
        if draw(st.integers(0, 9)) == 0:
            continue  # a lost segment
        out.append(RawPacket(pkt.ts, pkt.linktype, bytes(data), pkt.wirelen))
    return out


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(packets=payload_mutations())
def test_pipeline_with_mutated_application_payloads_never_raises(
    packets: list[RawPacket],
) -> None:
    pipeline = Pipeline()
    out: list[Record] = []
    for pkt in packets:
        out += pipeline.feed(pkt)
    out += pipeline.flush()
    assert "protocol_analyzer_error" not in pipeline.stats.weirds
    weirds = [r for r in out if isinstance(r, Weird)]
    assert len(weirds) == sum(pipeline.stats.weirds.values())


def test_an_analyzer_bug_becomes_a_weird_and_never_escapes_the_pipeline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: HttpAnalyzer, ts: float, is_orig: bool, chunk: bytes) -> None:
        raise ZeroDivisionError

    monkeypatch.setattr(HttpAnalyzer, "data", broken)
    pipeline = Pipeline()
    out: list[Record] = []
    for pkt in open_capture(DATA / "zeek-http-get.pcap"):
        out += pipeline.feed(pkt)
    out += pipeline.flush()
    weirds = [(w.name, w.addl) for w in out if isinstance(w, Weird)]
    assert weirds == [("protocol_analyzer_error", "ZeroDivisionError")]
    assert not [r for r in out if isinstance(r, Http)]
