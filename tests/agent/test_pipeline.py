"""Pipeline: frames -> decoders -> flows -> records, with bad input turned into weird records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from a2z.agent.capture import RawPacket, open_capture, pcap_file
from a2z.agent.flows import FlowConfig
from a2z.agent.pipeline import Pipeline
from a2z.records import Conn, Record, Weird
from tests.agent.packet_builder import ACK, FIN, SYN, eth, icmp, ipv4, ipv6, raw, tcp, udp

DATA = Path(__file__).resolve().parents[1] / "data"


def _run(
    packets: list[RawPacket], config: FlowConfig | None = None
) -> tuple[list[Record], Pipeline]:
    pipeline = Pipeline(config)
    out: list[Record] = []
    for pkt in packets:
        out.extend(pipeline.feed(pkt))
    out.extend(pipeline.flush())
    return out, pipeline


def _conns(records: list[Record]) -> list[Conn]:
    return [r for r in records if isinstance(r, Conn)]


def test_tcp_handshake_capture_becomes_one_established_conn() -> None:
    records, pipeline = _run(list(open_capture(DATA / "tcp-handshake-nano.pcap")))
    (conn,) = _conns(records)
    assert (conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p) == (
        "131.155.215.69",
        46656,
        "137.116.81.94",
        80,
    )
    assert conn.proto == "tcp"
    assert conn.conn_state == "S1"
    assert conn.history == "ShA"
    assert (conn.orig_pkts, conn.orig_ip_bytes, conn.resp_pkts, conn.resp_ip_bytes) == (
        2,
        112,
        1,
        60,
    )
    assert (conn.orig_bytes, conn.resp_bytes) == (0, 0)
    assert conn.service is None
    assert conn.duration == pytest.approx(0.127609669, abs=1e-6)
    assert pipeline.stats.packets == 3
    assert pipeline.stats.bytes == 220
    assert pipeline.stats.records == {"conn": 1}


def test_icmp_echo_pairs_share_a_flow_keyed_by_type_and_counterpart() -> None:
    records, _ = _run(list(open_capture(DATA / "5-pings.pcap")))
    (conn,) = _conns(records)
    assert (conn.proto, conn.orig_p, conn.resp_p) == ("icmp", 8, 0)
    assert (conn.orig_pkts, conn.resp_pkts) == (5, 5)
    assert conn.conn_state == "OTH"


def test_full_tcp_session_with_data_is_sf_with_payload_sizes() -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    packets = [
        raw(1.0, eth(ipv4(a, b, 6, tcp(40000, 80, SYN, seq=100)))),
        raw(1.1, eth(ipv4(b, a, 6, tcp(80, 40000, SYN | ACK, seq=500, ack=101)))),
        raw(1.2, eth(ipv4(a, b, 6, tcp(40000, 80, ACK, seq=101, ack=501)))),
        raw(1.3, eth(ipv4(a, b, 6, tcp(40000, 80, ACK, seq=101, ack=501, data=b"x" * 10)))),
        raw(1.4, eth(ipv4(b, a, 6, tcp(80, 40000, ACK, seq=501, ack=111, data=b"y" * 25)))),
        raw(1.5, eth(ipv4(a, b, 6, tcp(40000, 80, FIN | ACK, seq=111, ack=526)))),
        raw(1.6, eth(ipv4(b, a, 6, tcp(80, 40000, FIN | ACK, seq=526, ack=112)))),
        raw(1.7, eth(ipv4(a, b, 6, tcp(40000, 80, ACK, seq=112, ack=527)))),
    ]
    (conn,) = _conns(_run(packets)[0])
    assert conn.conn_state == "SF"
    assert conn.history == "ShADdFf"  # the responder never sent a pure ACK: no "a"
    assert (conn.orig_bytes, conn.resp_bytes) == (10, 25)
    assert (conn.orig_pkts, conn.resp_pkts) == (5, 3)
    assert conn.orig_ip_bytes == 5 * 40 + 10
    # Zeek stops the clock once both sides closed: the last ACK does not extend the duration.
    assert conn.duration == pytest.approx(0.6)


def test_syn_ack_seen_first_flips_originator_and_marks_history() -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    packets = [
        raw(1.0, eth(ipv4(b, a, 6, tcp(80, 40000, SYN | ACK, seq=500, ack=101)))),
        raw(1.1, eth(ipv4(a, b, 6, tcp(40000, 80, ACK, seq=101, ack=501)))),
    ]
    (conn,) = _conns(_run(packets)[0])
    assert (conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p) == (a, 40000, b, 80)
    assert conn.history.startswith("^h")
    assert conn.conn_state == "S1"


def test_unanswered_syn_is_s0_and_rejected_syn_is_rej() -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    packets = [
        raw(1.0, eth(ipv4(a, b, 6, tcp(1111, 22, SYN, seq=7)))),
        raw(1.0, eth(ipv4(a, b, 6, tcp(2222, 23, SYN, seq=9)))),
        raw(1.1, eth(ipv4(b, a, 6, tcp(23, 2222, 0x14, seq=0, ack=10)))),
    ]
    states = {c.orig_p: (c.conn_state, c.history) for c in _conns(_run(packets)[0])}
    assert states == {1111: ("S0", "S"), 2222: ("REJ", "Sr")}


def test_udp_flow_counts_payload_from_udp_length_and_is_sf_when_answered() -> None:
    a, b = "192.0.2.1", "192.0.2.53"
    packets = [
        raw(5.0, eth(ipv4(a, b, 17, udp(5353, 53, b"q" * 30)))),
        raw(5.5, eth(ipv4(b, a, 17, udp(53, 5353, b"r" * 70)))),
    ]
    (conn,) = _conns(_run(packets)[0])
    assert (conn.conn_state, conn.history) == ("SF", "Dd")
    assert (conn.orig_bytes, conn.resp_bytes) == (30, 70)
    assert (conn.orig_ip_bytes, conn.resp_ip_bytes) == (58, 98)


def test_single_packet_flow_has_no_duration_or_byte_counts_like_zeek() -> None:
    (conn,) = _conns(_run([raw(1.0, eth(ipv4("1.1.1.1", "2.2.2.2", 17, udp(1, 2, b"abc"))))])[0])
    assert conn.duration is None
    assert conn.orig_bytes is None
    assert conn.conn_state == "S0"


def test_ipv6_udp_over_vlan_is_tracked() -> None:
    frame = eth(
        ipv6("2001:db8::1", "2001:db8::2", 17, udp(1000, 2000, b"hello")),
        ethertype=0x86DD,
        vlans=(10, 20),
    )
    (conn,) = _conns(_run([raw(1.0, frame)])[0])
    assert (conn.orig_h, conn.resp_h, conn.orig_ip_bytes) == ("2001:db8::1", "2001:db8::2", 53)


def test_idle_udp_flow_is_emitted_on_timeout_driven_by_packet_time() -> None:
    a, b = "10.1.1.1", "10.1.1.2"
    pipeline = Pipeline(FlowConfig(udp_timeout=60.0))
    assert pipeline.feed(raw(100.0, eth(ipv4(a, b, 17, udp(1, 2, b"x"))))) == []
    assert pipeline.feed(raw(159.0, eth(ipv4(a, "10.9.9.9", 17, udp(3, 4))))) == []
    emitted = pipeline.feed(raw(161.0, eth(ipv4(a, "10.9.9.9", 17, udp(3, 4)))))
    assert [(c.orig_p, c.resp_p) for c in _conns(emitted)] == [(1, 2)]


def test_closed_tcp_flow_is_emitted_after_the_close_delay() -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    pipeline = Pipeline(FlowConfig(tcp_close_delay=5.0))
    for ts, frame in [
        (1.0, ipv4(a, b, 6, tcp(4000, 80, SYN, seq=1))),
        (1.1, ipv4(b, a, 6, tcp(80, 4000, SYN | ACK, seq=9, ack=2))),
        (1.2, ipv4(a, b, 6, tcp(4000, 80, FIN | ACK, seq=2, ack=10))),
        (1.3, ipv4(b, a, 6, tcp(80, 4000, FIN | ACK, seq=10, ack=3))),
    ]:
        assert pipeline.feed(raw(ts, eth(frame))) == []
    later = pipeline.feed(raw(6.4, eth(ipv4(a, b, 17, udp(1, 2)))))
    assert [c.conn_state for c in _conns(later)] == ["SF"]


def test_full_table_evicts_least_recently_active_flow_and_counts_it() -> None:
    pipeline = Pipeline(FlowConfig(max_flows=2))
    a = "10.0.0.1"
    out: list[Record] = []
    for i, port in enumerate([1, 2, 1, 3]):
        out += pipeline.feed(raw(float(i), eth(ipv4(a, "10.0.0.2", 17, udp(port, 53)))))
    assert [c.orig_p for c in _conns(out)] == [2]
    assert pipeline.stats.evictions == 1


def test_uids_look_like_zeek_and_are_reproducible_with_a_seed() -> None:
    packets = list(open_capture(DATA / "dnssec.pcap"))
    first = [c.uid for c in _conns(_run(packets, FlowConfig(uid_seed=7))[0])]
    again = [c.uid for c in _conns(_run(packets, FlowConfig(uid_seed=7))[0])]
    assert first == again
    assert all(re.fullmatch(r"C[0-9A-Za-z]{17}", uid) for uid in first)
    assert len(set(first)) == len(first)


def test_truncated_ip_header_becomes_weird_record_and_counter() -> None:
    frame = eth(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, SYN))[:12])
    records, pipeline = _run([raw(3.0, frame)])
    (weird,) = records
    assert isinstance(weird, Weird)
    assert (weird.name, weird.source, weird.ts) == ("truncated_ip_header", "IP", 3.0)
    assert pipeline.stats.weirds == {"truncated_ip_header": 1}
    assert pipeline.stats.records == {"weird": 1}


def test_truncated_tcp_header_weird_carries_the_addresses() -> None:
    frame = eth(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, SYN)[:10]))
    (weird,) = _run([raw(3.0, frame)])[0]
    assert isinstance(weird, Weird)
    assert (weird.name, weird.source, weird.orig_h, weird.resp_h) == (
        "truncated_tcp_header",
        "TCP",
        "10.0.0.1",
        "10.0.0.2",
    )


def test_lone_ip_fragment_waits_and_is_counted_incomplete_not_tracked() -> None:
    frame = eth(ipv4("10.0.0.1", "10.0.0.2", 17, b"z" * 16, frag=185))
    records, pipeline = _run([raw(1.0, frame)])
    assert records == []
    assert (pipeline.defrag.stats.fragments, pipeline.defrag.stats.incomplete) == (1, 1)


def test_unknown_linktype_arp_and_other_protocols_are_counted_not_raised() -> None:
    arp = eth(bytes.fromhex("0001080006040001") + b"\x00" * 20, ethertype=0x0806)
    lldp = eth(b"\x00" * 20, ethertype=0x88CC)
    gre = eth(ipv4("10.0.0.1", "10.0.0.2", 47, b"\x00" * 8))
    records, pipeline = _run(
        [raw(1.0, arp), raw(1.0, lldp), raw(1.0, gre), raw(1.0, b"\x00" * 30, linktype=147)]
    )
    assert pipeline.stats.ignored == {"arp": 1, "ethertype_0x88cc": 1, "ip_proto_47": 1}
    assert [r.name for r in records if isinstance(r, Weird)] == ["unknown_linktype"]


def test_icmpv6_echo_over_ipv6_is_an_icmp_flow() -> None:
    a, b = "2001:db8::1", "2001:db8::2"
    packets = [
        raw(1.0, eth(ipv6(a, b, 58, icmp(128, 0, b"ping")), ethertype=0x86DD)),
        raw(1.5, eth(ipv6(b, a, 58, icmp(129, 0, b"ping")), ethertype=0x86DD)),
    ]
    (conn,) = _conns(_run(packets)[0])
    assert (conn.proto, conn.orig_p, conn.resp_p, conn.orig_pkts, conn.resp_pkts) == (
        "icmp",
        128,
        129,
        1,
        1,
    )
    assert (conn.orig_bytes, conn.resp_bytes) == (4, 4)


def test_weird_flood_is_sampled_but_fully_counted() -> None:
    pipeline = Pipeline(weird_sample_threshold=5, weird_sample_rate=10)
    out: list[Record] = []
    for i in range(40):
        out += pipeline.feed(raw(float(i), b"\x00" * 5))
    assert pipeline.stats.weirds == {"truncated_ethernet_header": 40}
    assert len(out) == 5 + 4  # the first five, then every tenth


@pytest.mark.parametrize("name", ["dnssec.pcap", "frag-v4v6-udp-icmp.pcap"])
def test_feed_batch_gives_the_records_of_feeding_one_by_one(name: str) -> None:
    packets = list(open_capture(DATA / name))
    one_by_one, single = _run(packets, FlowConfig(uid_seed=5))
    batched = Pipeline(FlowConfig(uid_seed=5))
    records = batched.feed_batch(packets[:3]) + batched.feed_batch(packets[3:])
    records += batched.flush()
    assert records == one_by_one
    assert batched.stats == single.stats


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("dnssec.pcap", 32 * 1024),
        ("frag-v4v6-udp-icmp.pcap", 32 * 1024),
        ("frag-v4v6-udp-icmp.pcap", 16),  # every record longer than a window: read alone
        ("http1-with-cookies.pcapng", 32 * 1024),  # pcapng: lists of packets, no windows
        ("defrag-eth-vlan-ipv4-tcp-syn.pcap", 100),  # frames the fast path declines
    ],
)
def test_windows_fed_where_they_lie_give_the_records_of_feeding_packets(
    name: str, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    packets = list(open_capture(DATA / name))
    one_by_one, single = _run(packets, FlowConfig(uid_seed=5))
    monkeypatch.setattr(pcap_file, "WINDOW_BYTES", window)
    reader = open_capture(DATA / name)
    fed = Pipeline(FlowConfig(uid_seed=5))
    records: list[Record] = []
    for batch in reader.feed(fed):
        records += fed.feed_batch(batch)
        records += fed.take_records()
    records += fed.flush()
    assert records == one_by_one
    assert fed.stats == single.stats
    assert reader.stats.packets == len(packets)
