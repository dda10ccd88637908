"""HTTP/1.x: heads across segments, pipelining, body framing, gaps, Basic auth, CONNECT."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2z.agent.capture import RawPacket
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols import (
    MalformedMessage,
    ProtocolConfig,
    basic_credentials,
    parse_request_head,
    parse_response_head,
)
from a2z.agent.protocols.http import starts_like_request
from a2z.agent.replay import iter_records
from a2z.records import Conn, Http, Record, Ssl, Weird
from tests.agent.protocol_builder import TcpConversation, client_hello, handshake, tls_record

DATA = Path(__file__).resolve().parents[1] / "data"

GET = b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: curl/8\r\n\r\n"


def _run(packets: list[RawPacket], config: ProtocolConfig | None = None) -> list[Record]:
    pipeline = Pipeline(protocols=config)
    out: list[Record] = []
    for pkt in packets:
        out += pipeline.feed(pkt)
    return out + pipeline.flush()


def _http(records: list[Record]) -> list[Http]:
    return [r for r in records if isinstance(r, Http)]


def _response(body: bytes, *, code: str = "200 OK", extra: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {code}\r\nContent-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


# -- pure parsers -----------------------------------------------------------------------------


def test_parse_request_head_fields_and_folded_headers() -> None:
    head = parse_request_head(
        b"POST /a%20b?x=1 HTTP/1.0\r\nHost: h:8080\r\nX-Long: one\r\n  two\r\nReferer: r\r\n"
    )
    assert (head.method, head.uri, head.version) == ("POST", "/a%20b?x=1", "1.0")
    assert head.headers == (("HOST", "h:8080"), ("X-LONG", "one two"), ("REFERER", "r"))


def test_parse_request_head_keeps_uri_with_spaces_and_http09() -> None:
    assert parse_request_head(b"GET /a b HTTP/1.1").uri == "/a b"
    simple = parse_request_head(b"GET /old")
    assert (simple.uri, simple.version) == ("/old", None)


def test_parse_heads_reject_garbage_with_typed_errors() -> None:
    with pytest.raises(MalformedMessage) as err:
        parse_request_head(b"\x16\x03\x01 hello")
    assert (err.value.source, err.value.name) == ("HTTP", "bad_HTTP_request")
    with pytest.raises(MalformedMessage):
        parse_response_head(b"HTTP/1.1 abc Bad")
    status = parse_response_head(b"HTTP/1.1 404 Not Found\r\nServer: x")
    assert (status.version, status.status_code, status.status_msg) == ("1.1", 404, "Not Found")


def test_basic_credentials_like_zeek() -> None:
    assert basic_credentials("Basic YWRtaW46aHVudGVyMg==") == ("admin", "hunter2")
    assert basic_credentials("bAsIc   YWRtaW46aHVudGVyMg==") == ("admin", "hunter2")
    assert basic_credentials("Bearer abc") is None
    user, password = basic_credentials("Basic bm9jb2xvbg==") or ("", None)
    assert user == "<problem-decoding> (Basic bm9jb2xvbg==)"
    assert password == "nocolon"


def test_request_detection_needs_a_known_method_and_waits_for_short_prefixes() -> None:
    assert starts_like_request(b"GET / HTTP/1.1") is True
    assert starts_like_request(b"PROPFIND /x") is True
    assert starts_like_request(b"GE") is None
    assert starts_like_request(b"HELLO world") is False
    assert starts_like_request(b"\x16\x03\x01") is False


# -- the analyzer through the pipeline ---------------------------------------------------------


def test_request_and_response_pair_with_every_field() -> None:
    req = (
        b"GET /admin HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: sqlmap/1.7\r\n"
        b"Referer: http://x/\r\nAuthorization: Basic YWRtaW46aHVudGVyMg==\r\n\r\n"
    )
    conv = TcpConversation().handshake().send(True, req).send(False, _response(b"secret!"))
    records = _run(conv.close().packets)
    (rec,) = _http(records)
    assert (rec.method, rec.host, rec.uri, rec.version) == ("GET", "10.0.0.2", "/admin", "1.1")
    assert (rec.user_agent, rec.referrer) == ("sqlmap/1.7", "http://x/")
    assert (rec.status_code, rec.status_msg, rec.response_body_len) == (200, "OK", 7)
    assert (rec.username, rec.password, rec.trans_depth) == ("admin", None, 1)
    (conn,) = [r for r in records if isinstance(r, Conn)]
    assert (conn.service, rec.uid) == ("http", conn.uid)


def test_password_is_logged_only_when_the_policy_says_so() -> None:
    req = b"GET / HTTP/1.1\r\nAuthorization: Basic YWRtaW46aHVudGVyMg==\r\n\r\n"
    conv = TcpConversation().handshake().send(True, req).send(False, _response(b"")).close()
    (rec,) = _http(_run(conv.packets, ProtocolConfig(capture_password=True)))
    assert (rec.username, rec.password) == ("admin", "hunter2")


def test_header_block_split_across_many_segments() -> None:
    conv = TcpConversation().handshake()
    for i in range(0, len(GET), 7):
        conv.send(True, GET[i : i + 7])
    resp = _response(b"abc")
    conv.send(False, resp[:5]).send(False, resp[5:]).close()
    (rec,) = _http(_run(conv.packets))
    assert (rec.host, rec.uri, rec.user_agent, rec.status_code) == (
        "www.example.test",
        "/index.html?q=1",
        "curl/8",
        200,
    )


def test_out_of_order_segments_are_reassembled_before_parsing() -> None:
    conv = TcpConversation().handshake()
    first, second = GET[:20], GET[20:]
    base = conv.seq[True]
    conv.send(True, second, seq=base + len(first)).send(True, first, seq=base)
    conv.skip(True, len(GET)).send(False, _response(b"")).close()
    (rec,) = _http(_run(conv.packets))
    assert (rec.method, rec.uri, rec.host) == ("GET", "/index.html?q=1", "www.example.test")


def test_retransmitted_segment_is_not_parsed_twice() -> None:
    conv = TcpConversation().handshake()
    base = conv.seq[True]
    conv.send(True, GET).send(True, GET, seq=base).send(False, _response(b"x")).close()
    assert len(_http(_run(conv.packets))) == 1


def test_pipelined_requests_pair_with_responses_in_order() -> None:
    reqs = (
        b"".join(f"GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(3))
        + b"HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    resps = (
        _response(b"a" * 10)
        + b"HTTP/1.1 204 No Content\r\n\r\n"
        + _response(b"c" * 30, code="404 Not Found")
        + b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"  # HEAD: no body follows
    )
    conv = TcpConversation().handshake().send(True, reqs).send(False, resps).close()
    recs = sorted(_http(_run(conv.packets)), key=lambda r: r.trans_depth)
    assert [(r.trans_depth, r.uri, r.status_code, r.response_body_len) for r in recs] == [
        (1, "/0", 200, 10),
        (2, "/1", 204, 0),
        (3, "/2", 404, 30),
        (4, "/head", 200, 0),
    ]


def test_chunked_body_and_request_body_lengths() -> None:
    post = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n10;ext=1\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    )
    conv = TcpConversation().handshake().send(True, post)
    for i in range(0, len(chunked), 9):
        conv.send(False, chunked[i : i + 9])
    (rec,) = _http(_run(conv.close().packets))
    assert (rec.method, rec.request_body_len, rec.response_body_len) == ("POST", 11, 21)


def test_body_until_close_is_counted_at_the_end_of_the_flow() -> None:
    resp = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\n" + b"z" * 1234
    conv = TcpConversation().handshake().send(True, GET).send(False, resp).close()
    (rec,) = _http(_run(conv.packets))
    assert (rec.status_code, rec.response_body_len) == (200, 1234)


def test_informational_response_waits_for_the_final_one() -> None:
    post = b"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
    resp = b"HTTP/1.1 100 Continue\r\n\r\n" + _response(b"done")
    conv = TcpConversation().handshake().send(True, post).send(False, resp).close()
    (rec,) = _http(_run(conv.packets))
    assert (rec.status_code, rec.status_msg, rec.response_body_len) == (200, "OK", 4)


def test_gap_inside_a_known_length_body_keeps_the_framing_and_counts_a_weird() -> None:
    conv = TcpConversation().handshake().send(True, GET + GET.replace(b"index", b"next"))
    resp1 = _response(b"A" * 1000)
    conv.send(False, resp1[:-900]).skip(False, 500).send(False, resp1[-400:])
    conv.send(False, _response(b"B" * 3)).close()
    records = _run(conv.packets)
    recs = sorted(_http(records), key=lambda r: r.trans_depth)
    assert [(r.uri, r.status_code, r.response_body_len) for r in recs] == [
        ("/index.html?q=1", 200, 500),  # the 500 missing bytes are not body we saw
        ("/next.html?q=1", 200, 3),
    ]
    assert [(w.name, w.source) for w in records if isinstance(w, Weird)] == [
        ("content_gap", "HTTP")
    ]


def test_gap_inside_a_header_block_gives_up_on_that_direction() -> None:
    conv = TcpConversation().handshake().send(True, GET[:10]).skip(True, 5)
    conv.send(True, GET[15:]).send(False, _response(b"x")).close()
    records = _run(conv.packets)
    # The response acknowledges the whole request: the hole is known lost before the
    # response is parsed, the request is given up, and the response logs on its own.
    weirds = [w.name for w in records if isinstance(w, Weird)]
    assert weirds == ["content_gap", "HTTP_response_before_request"]
    assert [(r.method, r.status_code) for r in _http(records)] == [(None, 200)]


def test_oversized_header_block_is_bounded_and_reported() -> None:
    head = b"GET / HTTP/1.1\r\nX-Fill: " + b"a" * 40000
    conv = TcpConversation().handshake()
    for i in range(0, len(head), 1400):
        conv.send(True, head[i : i + 1400])
    records = _run(conv.close().packets)
    assert "HTTP_header_too_long" in {w.name for w in records if isinstance(w, Weird)}


def test_http_on_an_unusual_port_is_found_by_content() -> None:
    conv = TcpConversation(server=("10.0.0.2", 9999)).handshake()
    records = _run(conv.send(True, GET).send(False, _response(b"")).close().packets)
    assert [r.uri for r in _http(records)] == ["/index.html?q=1"]
    assert [c.service for c in records if isinstance(c, Conn)] == ["http"]


def test_non_http_payload_on_port_80_is_not_http() -> None:
    conv = TcpConversation().handshake().send(True, b"SSH-2.0-OpenSSH_9.2\r\n").close()
    records = _run(conv.packets)
    assert _http(records) == []
    assert [c.service for c in records if isinstance(c, Conn)] == [None]


def test_connect_tunnel_hands_the_flow_to_tls_detection() -> None:
    conv = TcpConversation(server=("10.0.0.2", 3128)).handshake()
    conv.send(True, b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
    conv.send(False, b"HTTP/1.1 200 Connection established\r\n\r\n")
    conv.send(True, tls_record(22, handshake(1, client_hello(sni="example.test"))))
    records = _run(conv.close().packets)
    assert [(r.method, r.status_code) for r in _http(records)] == [("CONNECT", 200)]
    assert [r.server_name for r in records if isinstance(r, Ssl)] == ["example.test"]
    assert [c.service for c in records if isinstance(c, Conn)] == ["http,ssl"]


def test_demo_capture_http_records() -> None:
    recs = _http(list(iter_records(Path(__file__).parents[2] / "src/a2z/demo/data/attack.pcap")))
    assert len(recs) == 23
    auth = [r for r in recs if r.username]
    assert [(r.uri, r.username, r.password, r.status_code) for r in auth] == [
        ("/admin", "admin", None, 200)
    ]
    agents = {r.user_agent for r in recs}
    assert "sqlmap/1.7.2#stable (https://sqlmap.org)" in agents
    assert "Mozilla/5.0 zgrab/0.x" in agents
    assert {r.uri for r in recs} >= {"/../../etc/passwd", "/products?id=1'+OR+'1'='1"}


def test_real_pipelined_capture_http1_matches_request_count() -> None:
    recs = _http(list(iter_records(DATA / "http1.pcapng")))
    assert len([r for r in recs if r.method]) == 56
    # One POST's response is not in the capture (tshark pairs 55 as well).
    assert len([r for r in recs if r.status_code]) == 55


def test_out_of_order_bytes_beyond_the_bound_become_a_gap_weird() -> None:
    conv = TcpConversation().handshake().send(True, GET)
    ahead = conv.seq[True] + 1000
    conv.send(True, b"x" * 300, seq=ahead)  # far ahead: more than may be held
    records = _run(conv.close().packets, ProtocolConfig(max_reorder_bytes=256))
    gaps = [w.addl for w in records if isinstance(w, Weird) and w.name == "content_gap"]
    assert gaps == ["1000 bytes"]
