"""DNS: the message parser, answer rendering as Zeek logs it, pairing, TCP framing, baselines."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from a2z.agent.capture import RawPacket
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols import MalformedMessage, NeedMoreData, looks_like_dns, parse_dns
from a2z.agent.protocols.dns import read_name
from a2z.agent.replay import iter_records
from a2z.records import Conn, Dns, Record, Weird
from tests.agent.protocol_builder import TcpConversation, dns_message, dns_name, udp_exchange

DATA = Path(__file__).resolve().parents[1] / "data"
BASELINES = DATA / "zeek-baselines"

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, CAA, HTTPS = 1, 2, 5, 6, 12, 15, 16, 28, 33, 257, 65


def _run(packets: list[RawPacket]) -> list[Record]:
    pipeline = Pipeline()
    out: list[Record] = []
    for pkt in packets:
        out += pipeline.feed(pkt)
    return out + pipeline.flush()


def _dns(records: list[Record]) -> list[Dns]:
    return [r for r in records if isinstance(r, Dns)]


def _answer(rtype: int, rdata: bytes, ttl: int = 60) -> tuple[bytes, int, int, bytes]:
    return (b"\xc0\x0c", rtype, ttl, rdata)  # owner: a pointer to the question name


# -- parser --------------------------------------------------------------------------------


def test_parse_dns_renders_every_common_answer_type_like_zeek() -> None:
    caa = b"\x00\x05issueletsencrypt.org"
    https = struct.pack("!H", 1) + b"\x00" + b"\x00\x01\x00\x03\x02h2"  # priority 1, target "."
    srv = struct.pack("!HHH", 10, 5, 443) + dns_name("sip.example.test")
    soa = dns_name("ns1.example.test") + dns_name("hostmaster.example.test") + b"\0" * 20
    msg = dns_message(
        7,
        response=True,
        questions=[(dns_name("WWW.Example.TEST"), A)],
        answers=[
            _answer(A, socket.inet_aton("192.0.2.1")),
            _answer(AAAA, socket.inet_pton(socket.AF_INET6, "2001:db8::1")),
            _answer(CNAME, dns_name("alias.example.test")),
            _answer(NS, b"\x03ns1\xc0\x10"),  # compressed into the question name
            _answer(PTR, dns_name("host.example.test")),
            _answer(MX, b"\x00\x0a" + dns_name("mail.example.test")),
            _answer(TXT, b"\x05hello\x05world"),
            _answer(SOA, soa),
            _answer(SRV, srv),
            _answer(CAA, caa),
            _answer(HTTPS, https),
            _answer(99, b"\x03spf"),
            _answer(4242, b"\x01\x02"),
        ],
    )
    parsed = parse_dns(msg)
    assert parsed.qr
    assert parsed.questions[0].name == "www.example.test"  # lower-cased, as Zeek logs it
    assert [a.text for a in parsed.answers] == [
        "192.0.2.1",
        "2001:db8::1",
        "alias.example.test",
        "ns1.example.test",
        "host.example.test",
        "mail.example.test",  # Zeek logs the exchange only, not the preference
        "TXT 5 hello TXT 5 world",
        "ns1.example.test",  # SOA: the primary name server (mname)
        "sip.example.test",  # SRV: the target
        "CAA 0 issue letsencrypt.org",
        "HTTPS 1 .",
        "SPF 3 spf",
        "<unknown type=4242>",
    ]
    assert [a.ttl for a in parsed.answers] == [60] * 13


def test_parse_dns_header_flags_and_counts() -> None:
    msg = dns_message(0xBEEF, response=True, rcode=3, flags=0x0580 | 0x0030)
    parsed = parse_dns(msg)
    assert (parsed.trans_id, parsed.rcode, parsed.aa, parsed.rd, parsed.ra) == (
        0xBEEF,
        3,
        True,
        True,
        True,
    )
    assert parsed.z == 3  # AD and CD: Zeek's Z is the three bits after RA
    assert parsed.tc is False


def test_parse_dns_short_message_raises_need_more_data() -> None:
    with pytest.raises(NeedMoreData) as err:
        parse_dns(b"\x00\x01\x00")
    assert err.value.name == "DNS_truncated_len_lt_hdr_len"
    assert err.value.source == "DNS"


def test_read_name_rejects_forward_and_self_pointers() -> None:
    with pytest.raises(MalformedMessage) as err:
        read_name(b"\xc0\x00", 0)  # points at itself
    assert err.value.name == "DNS_label_forward_compress_offset"
    with pytest.raises(MalformedMessage):
        read_name(b"\x00\x00\xc0\x04\x00", 2)  # points forward


def test_read_name_pointer_loop_ends_with_a_typed_error() -> None:
    # A label followed by a pointer back to that label: each pass adds a label.
    buf = b"\x00" * 12 + b"\x03abc\xc0\x0c"
    with pytest.raises(MalformedMessage) as err:
        read_name(buf, 12)
    assert err.value.name in {"DNS_NAME_too_long", "DNS_name_pointer_loop"}


def test_read_name_escapes_unprintable_bytes_and_keeps_the_root_empty() -> None:
    assert read_name(b"\x03a\x00b\x00", 0) == ("a\\x00b", 5)
    assert read_name(b"\x00", 0) == ("", 1)


def test_partial_parse_keeps_answers_before_a_bad_one() -> None:
    msg = dns_message(
        1,
        response=True,
        questions=[(dns_name("x.test"), A)],
        answers=[_answer(A, b"\x01\x02\x03\x04"), _answer(A, b"\x01\x02\x03")],
    )
    parsed = parse_dns(msg, partial=True)
    assert [a.text for a in parsed.answers] == ["1.2.3.4"]
    assert parsed.error is not None
    assert parsed.error.name == "DNS_RR_bad_length"
    with pytest.raises(MalformedMessage):
        parse_dns(msg)


def test_looks_like_dns_is_strict_off_the_dns_ports() -> None:
    query = dns_message(5, questions=[(dns_name("a.example"), A)])
    assert looks_like_dns(query, standard_port=False)
    assert looks_like_dns(query, standard_port=True)
    assert not looks_like_dns(query + b"trailing", standard_port=False)
    assert looks_like_dns(query + b"trailing", standard_port=True)
    assert not looks_like_dns(b"\x17\x03\x03\x00\x20" + b"\0" * 32, standard_port=False)
    assert not looks_like_dns(b"GET / HTTP/1.1\r\n", standard_port=False)


# -- the analyzer through the pipeline -------------------------------------------------------


def test_query_and_reply_pair_into_one_record_with_rtt() -> None:
    q = dns_message(42, questions=[(dns_name("www.example.test"), A)])
    r = dns_message(
        42,
        response=True,
        flags=0x0180,
        questions=[(dns_name("www.example.test"), A)],
        answers=[_answer(A, b"\x0a\x00\x00\x01", ttl=300)],
    )
    records = _run(udp_exchange([(True, q), (False, r)]))
    (rec,) = _dns(records)
    assert (rec.trans_id, rec.query, rec.qtype_name, rec.qclass_name) == (
        42,
        "www.example.test",
        "A",
        "C_INTERNET",
    )
    assert (rec.rcode, rec.rcode_name, rec.RD, rec.RA, rec.AA) == (0, "NOERROR", True, True, False)
    assert rec.answers == ["10.0.0.1"]
    assert rec.TTLs == [300.0]
    assert rec.rtt == pytest.approx(0.01)
    assert rec.proto == "udp"
    (conn,) = [r for r in records if isinstance(r, Conn)]
    assert conn.service == "dns"
    assert rec.uid == conn.uid


def test_nxdomain_without_answers_and_rejected_empty_reply() -> None:
    q1 = dns_message(1, questions=[(dns_name("nope.test"), A)])
    r1 = dns_message(
        1,
        response=True,
        rcode=3,
        questions=[(dns_name("nope.test"), A)],
        authority=1,
        extra=dns_name("test") + struct.pack("!HHIH", SOA, 1, 60, 0),
    )
    q2 = dns_message(2, questions=[(dns_name("empty.test"), TXT)])
    r2 = dns_message(2, response=True, rcode=5, questions=[(dns_name("empty.test"), TXT)])
    recs = _dns(_run(udp_exchange([(True, q1), (False, r1), (True, q2), (False, r2)])))
    by_id = {r.trans_id: r for r in recs}
    assert (by_id[1].rcode_name, by_id[1].answers, by_id[1].rejected) == ("NXDOMAIN", None, False)
    assert (by_id[2].rcode_name, by_id[2].rejected) == ("REFUSED", True)


def test_unanswered_query_is_logged_when_the_flow_times_out() -> None:
    q = dns_message(9, questions=[(dns_name("slow.test"), AAAA)])
    packets = udp_exchange([(True, q)])
    # A later unrelated packet moves time past the UDP inactivity timeout (60 s).
    packets += udp_exchange(
        [(True, b"x")], client=("10.9.9.9", 1), server=("10.9.9.8", 2), ts=2000.0
    )
    pipeline = Pipeline()
    seen = [r for pkt in packets for r in pipeline.feed(pkt)]
    (rec,) = _dns(seen)  # emitted at the timeout, before the flush
    assert (rec.query, rec.qtype_name, rec.rcode, rec.answers) == ("slow.test", "AAAA", None, None)


def test_retransmitted_query_pairs_the_first_and_logs_the_second_unanswered() -> None:
    q = dns_message(77, questions=[(dns_name("r.test"), TXT)])
    r = dns_message(
        77, response=True, questions=[(dns_name("r.test"), TXT)], answers=[_answer(TXT, b"\x02ok")]
    )
    recs = _dns(_run(udp_exchange([(True, q), (True, q), (False, r)])))
    assert [(x.rcode, x.answers) for x in recs] == [(0, ["TXT 2 ok"]), (None, None)]
    assert recs[0].rtt == pytest.approx(0.02)  # FIFO: the reply answers the first query


def test_pairing_uses_the_query_name_as_well_as_the_id() -> None:
    qa = dns_message(5, questions=[(dns_name("a.test"), A)])
    qb = dns_message(5, questions=[(dns_name("b.test"), A)])
    rb = dns_message(
        5,
        response=True,
        questions=[(dns_name("b.test"), A)],
        answers=[_answer(A, b"\x01\x01\x01\x01")],
    )
    recs = _dns(_run(udp_exchange([(True, qa), (True, qb), (False, rb)])))
    answered = [r for r in recs if r.rcode is not None]
    assert [(r.query, r.answers) for r in answered] == [("b.test", ["1.1.1.1"])]
    assert [r.query for r in recs if r.rcode is None] == ["a.test"]


def test_reply_without_query_fills_the_question_from_the_reply() -> None:
    r = dns_message(
        3,
        response=True,
        questions=[(dns_name("only.reply"), MX)],
        answers=[_answer(MX, b"\x00\x01" + dns_name("mx.only.reply"))],
    )
    (rec,) = _dns(_run(udp_exchange([(False, r)])))
    assert (rec.query, rec.qtype_name, rec.answers, rec.rtt) == (
        "only.reply",
        "MX",
        ["mx.only.reply"],
        None,
    )


def test_dns_over_tcp_with_length_prefix_split_across_segments() -> None:
    q = dns_message(11, questions=[(dns_name("tcp.test"), A)])
    r = dns_message(
        11,
        response=True,
        questions=[(dns_name("tcp.test"), A)],
        answers=[_answer(A, b"\x05\x06\x07\x08")],
    )
    q_framed = struct.pack("!H", len(q)) + q
    r_framed = struct.pack("!H", len(r)) + r
    conv = TcpConversation(server=("10.0.0.2", 53)).handshake()
    conv.send(True, q_framed[:1]).send(True, q_framed[1:9]).send(True, q_framed[9:])
    conv.send(False, r_framed[:20]).send(False, r_framed[20:]).close()
    records = _run(conv.packets)
    (rec,) = _dns(records)
    assert (rec.proto, rec.query, rec.answers) == ("tcp", "tcp.test", ["5.6.7.8"])
    assert [c.service for c in records if isinstance(c, Conn)] == ["dns"]


def test_dns_over_tcp_two_messages_in_one_segment() -> None:
    q1 = dns_message(1, questions=[(dns_name("one.test"), A)])
    q2 = dns_message(2, questions=[(dns_name("two.test"), A)])
    both = struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2
    conv = TcpConversation(server=("10.0.0.2", 53)).handshake().send(True, both).close()
    assert sorted(r.query or "" for r in _dns(_run(conv.packets))) == ["one.test", "two.test"]


def test_dns_detected_by_content_on_a_non_dns_port_and_not_by_port_alone() -> None:
    q = dns_message(8, questions=[(dns_name("odd.port"), A)])
    r = dns_message(
        8,
        response=True,
        questions=[(dns_name("odd.port"), A)],
        answers=[_answer(A, b"\x01\x02\x03\x04")],
    )
    odd = _run(udp_exchange([(True, q), (False, r)], server=("10.0.0.2", 5300)))
    assert [x.query for x in _dns(odd)] == ["odd.port"]
    junk = _run(udp_exchange([(True, b"\x16\x03\x01 not dns at all"), (False, b"nope")]))
    assert _dns(junk) == []
    assert [c.service for c in junk if isinstance(c, Conn)] == [None]


def test_malformed_reply_becomes_a_weird_with_the_flow_uid() -> None:
    q = dns_message(4, questions=[(dns_name("bad.test"), A)])
    bad = dns_message(4, response=True, questions=[(dns_name("bad.test"), A)])[:-3]
    records = _run(udp_exchange([(True, q), (False, bad)]))
    weirds = [r for r in records if isinstance(r, Weird)]
    (conn,) = [r for r in records if isinstance(r, Conn)]
    assert [(w.name, w.source, w.uid) for w in weirds] == [
        ("DNS_truncated_quest_too_short", "DNS", conn.uid)
    ]


# -- Zeek's own baselines ------------------------------------------------------------------


def _zeek_rows(path: Path) -> list[dict[str, str]]:
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def _opt(value: str) -> str | None:
    return None if value == "-" else value


def test_ipv6_fragmented_dns_matches_zeek_dns_log() -> None:
    # Three rows: two answered TXT queries (the answers arrive in IPv6 fragments) and a
    # retransmitted query that stays unanswered.
    ours = _dns(list(iter_records(DATA / "ipv6-fragmented-dns.pcap")))
    rows = _zeek_rows(BASELINES / "core.ipv6-frag.dns.log")
    assert len(ours) == len(rows) == 3
    for rec, row in zip(sorted(ours, key=lambda r: r.ts), rows, strict=True):
        assert (rec.orig_h, rec.orig_p, rec.resp_h, rec.resp_p) == (
            row["id.orig_h"],
            int(row["id.orig_p"]),
            row["id.resp_h"],
            int(row["id.resp_p"]),
        )
        assert rec.trans_id == int(row["trans_id"])
        assert rec.query == row["query"]
        assert rec.qtype_name == row["qtype_name"]
        assert rec.rcode_name == _opt(row["rcode_name"])
        flags = {"AA": rec.AA, "TC": rec.TC, "RD": rec.RD, "RA": rec.RA, "Z": rec.Z}
        assert flags == {k: (row[k] == "T" if k != "Z" else int(row[k])) for k in flags}
        answers = _opt(row["answers"])
        assert rec.answers == (answers.split(",") if answers else None)
        ttls = _opt(row["TTLs"])
        assert rec.TTLs == ([float(t) for t in ttls.split(",")] if ttls else None)
        rtt = _opt(row["rtt"])
        assert rec.rtt == (pytest.approx(float(rtt), abs=1e-6) if rtt else None)


def test_txt_with_several_strings_matches_zeek_dns_log() -> None:
    # Zeek's btest dropped the query (bad checksum; we do not verify checksums), so only
    # the reply-derived fields are comparable with its row.
    (rec,) = _dns(list(iter_records(DATA / "dns-txt-multiple.pcap")))
    (row,) = _zeek_rows(BASELINES / "scripts.base.protocols.dns.multiple-txt-strings.dns.log")
    assert rec.query == row["query"]
    assert rec.answers == row["answers"].split(",")
    assert rec.TTLs == [float(t) for t in row["TTLs"].split(",")]
    assert (rec.rcode_name, rec.AA, rec.rejected) == (row["rcode_name"], True, False)


def test_ttl_is_unsigned_like_zeek_huge_ttl_baseline() -> None:
    (rec,) = _dns(list(iter_records(DATA / "dns-huge-ttl.pcap")))
    text = (BASELINES / "scripts.base.protocols.dns.huge-ttl.stdout").read_text()
    assert "TTL=49710.0 days 6.0 hrs 28.0 mins 15.0 secs" in text  # 2**32 - 1 seconds
    assert rec.TTLs is not None
    assert rec.TTLs[0] == 4294967295.0
    assert rec.TTLs[1:] == [900.0] * 7


def test_pointer_loop_in_a_real_capture_is_a_weird_not_an_exception() -> None:
    records = list(iter_records(DATA / "dns-invalid-names.pcap"))
    names = {r.name for r in records if isinstance(r, Weird)}
    assert names & {"DNS_label_forward_compress_offset", "DNS_name_pointer_loop"}
