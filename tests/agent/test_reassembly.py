"""IP fragment reassembly: unit behaviour, limits, Zeek's weirds, Suricata's reassembled bytes."""

from __future__ import annotations

import base64
import itertools
import random
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2z.agent.capture import RawPacket, open_capture
from a2z.agent.decode.ipv4 import decode_ipv4
from a2z.agent.decode.ipv6 import decode_ipv6
from a2z.agent.decode.link import ETH_IPV4, decode_link
from a2z.agent.decode.reassembly import DefragConfig, Reassembler, ipv4_checksum
from a2z.agent.pipeline import Pipeline
from a2z.records import Conn, Record, Weird
from tests.agent.packet_builder import eth, ipv4, ipv6, raw, tcp, udp

DATA = Path(__file__).resolve().parents[1] / "data"


# -- building fragments -----------------------------------------------------------------------


def with_checksum(packet: bytes) -> bytes:
    """An IPv4 packet with its header checksum filled in."""
    hl = (packet[0] & 0x0F) * 4
    head = bytearray(packet[:hl])
    head[10:12] = b"\0\0"
    head[10:12] = struct.pack("!H", ipv4_checksum(head))
    return bytes(head) + packet[hl:]


def split_ipv4(packet: bytes, cuts: list[int], *, ident: int | None = None) -> list[bytes]:
    """IPv4 fragments of ``packet`` (20-byte header) cut at the given payload offsets."""
    header, payload = bytearray(packet[:20]), packet[20:]
    if ident is None:
        (ident,) = struct.unpack_from("!H", packet, 4)
    bounds = [0, *cuts, len(payload)]
    out = []
    for start, end in itertools.pairwise(bounds):
        head = bytearray(header)
        more = 0x2000 if end < len(payload) else 0
        struct.pack_into("!HHH", head, 2, 20 + end - start, ident, more | start // 8)
        out.append(bytes(head) + payload[start:end])
    return out


def split_ipv6(packet: bytes, cuts: list[int], *, ident: int = 9, unfrag: int = 40) -> list[bytes]:
    """IPv6 fragments of ``packet``: the first ``unfrag`` bytes stay, a fragment header follows.

    The byte that named what follows the unfragmentable part (the fixed header's next header,
    or the last extension header's) now names the fragment header (44).
    """
    nh_at = 6 if unfrag == 40 else _last_ext_at(packet, unfrag)
    first = bytearray(packet[:unfrag])
    inner = first[nh_at]
    first[nh_at] = 44
    payload = packet[unfrag:]
    bounds = [0, *cuts, len(payload)]
    out = []
    for start, end in itertools.pairwise(bounds):
        head = bytearray(first)
        struct.pack_into("!H", head, 4, unfrag - 40 + 8 + end - start)
        more = 1 if end < len(payload) else 0
        frag = struct.pack("!BBHI", inner, 0, start | more, ident)
        out.append(bytes(head) + frag + payload[start:end])
    return out


def _last_ext_at(packet: bytes, unfrag: int) -> int:
    off, at = 40, 6
    while off < unfrag:
        at = off
        off += (packet[off + 1] + 1) * 8
    return at


def feed(
    reasm: Reassembler, packets: list[bytes], ts: float = 1.0
) -> tuple[list[bytes], list[str]]:
    """Hand raw IP packets to the reassembler; the whole datagrams and the weird names."""
    whole: list[bytes] = []
    weirds: list[str] = []
    for pkt in packets:
        buf = memoryview(pkt)
        if pkt[0] >> 4 == 4:
            got, w = reasm.add_ipv4(ts, decode_ipv4(buf), buf)
        else:
            got, w = reasm.add_ipv6(ts, decode_ipv6(buf), buf)
        weirds += [e.name for e in w]
        if got is not None:
            whole.append(got)
    return whole, weirds


def run_pipeline(packets: list[RawPacket], defrag: DefragConfig | None = None) -> list[Record]:
    pipeline = Pipeline(defrag=defrag)
    out: list[Record] = []
    for pkt in packets:
        out.extend(pipeline.feed(pkt))
    return out + pipeline.flush()


UDP4 = with_checksum(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1234, 53, bytes(range(256)) * 12)))


# -- IPv4 -------------------------------------------------------------------------------------


def test_ipv4_fragments_in_order_rebuild_the_original_packet_with_a_valid_checksum() -> None:
    whole, weirds = feed(Reassembler(), split_ipv4(UDP4, [1480, 2960]))
    assert whole == [UDP4]
    assert weirds == []


@pytest.mark.parametrize("seed", range(5))
def test_ipv4_fragments_in_any_order_rebuild_the_original(seed: int) -> None:
    frags = split_ipv4(UDP4, [8, 512, 1480, 2000, 2960])
    random.Random(seed).shuffle(frags)
    whole, weirds = feed(Reassembler(), frags)
    assert whole == [UDP4]
    assert weirds == ["excessively_small_fragment"]  # the 8-byte first piece, as Zeek


def test_overlap_keeps_the_first_copy_and_reports_inconsistency() -> None:
    first, last = split_ipv4(UDP4, [1480])
    # A second copy of bytes 1480..1488 with different content, sent before the real last piece.
    evil = bytearray(last[:28])
    struct.pack_into("!H", evil, 2, 28)
    struct.pack_into("!H", evil, 6, 0x2000 | 1480 // 8)
    evil[20:28] = b"EVILEVIL"
    reasm = Reassembler()
    whole, weirds = feed(reasm, [first, bytes(evil), last])
    assert weirds == ["excessively_small_fragment", "fragment_inconsistency"]
    assert len(whole) == 1
    assert whole[0][20 + 1480 : 20 + 1488] == b"EVILEVIL"  # first wins: the evil copy came first
    assert reasm.stats.overlaps == 1


def test_exact_duplicate_fragment_is_an_overlap_not_an_inconsistency() -> None:
    first, last = split_ipv4(UDP4, [1480])
    whole, weirds = feed(Reassembler(), [first, first, last])
    assert whole == [UDP4]
    assert weirds == ["fragment_overlap"]


def test_fragments_of_different_protocols_or_ids_do_not_mix() -> None:
    a = split_ipv4(UDP4, [1480], ident=1)
    b = split_ipv4(UDP4, [1480], ident=2)
    other = bytearray(a[1])
    other[9] = 6  # same id, other protocol: a different datagram (RFC 791 key)
    reasm = Reassembler()
    whole, _ = feed(reasm, [a[0], b[0], bytes(other), b[1], a[1]])
    assert whole == [_with_id(UDP4, 2), _with_id(UDP4, 1)]
    assert len(reasm) == 1  # the TCP "piece" waits alone


def _with_id(packet: bytes, ident: int) -> bytes:
    return with_checksum(packet[:4] + struct.pack("!H", ident) + packet[6:])


def test_fragment_with_df_is_reported_like_zeek() -> None:
    frags = [bytearray(f) for f in split_ipv4(UDP4, [1480])]
    for f in frags:
        f[6] |= 0x40
    whole, weirds = feed(Reassembler(), [bytes(f) for f in frags])
    assert weirds == ["fragment_with_DF", "fragment_with_DF"]
    assert len(whole) == 1


def test_timeout_by_packet_time_drops_the_incomplete_datagram() -> None:
    first, last = split_ipv4(UDP4, [1480])
    reasm = Reassembler(DefragConfig(timeout=30.0))
    assert feed(reasm, [first], ts=100.0)[0] == []
    assert feed(reasm, [last], ts=130.5)[0] == []  # too late: the first piece is gone
    assert reasm.stats.timeouts == 1
    assert len(reasm) == 1  # the late piece now waits on its own
    assert feed(reasm, [first], ts=131.0)[0] == [UDP4]


def test_memory_limit_evicts_the_oldest_datagrams_and_counts_them() -> None:
    reasm = Reassembler(DefragConfig(max_bytes=20_000))
    for ident in range(50):
        feed(reasm, split_ipv4(UDP4, [1480], ident=ident)[:1])
        assert reasm.held_bytes <= 20_000
    assert reasm.stats.evictions > 30
    assert len(reasm) == 50 - reasm.stats.evictions
    # The newest datagram survived and still completes.
    assert feed(reasm, split_ipv4(UDP4, [1480], ident=49)[1:])[0] == [_with_id(UDP4, 49)]


def test_pending_datagram_limit_evicts_the_oldest() -> None:
    reasm = Reassembler(DefragConfig(max_pending=3))
    for ident in range(5):
        feed(reasm, split_ipv4(UDP4, [1480], ident=ident)[1:])
    assert (len(reasm), reasm.stats.evictions) == (3, 2)


def test_fragment_beyond_the_datagram_limit_is_refused() -> None:
    big = ipv4("10.0.0.1", "10.0.0.2", 17, b"x" * 100, frag=65_528 // 8)
    whole, weirds = feed(Reassembler(), [with_checksum(big)])
    assert (whole, weirds) == ([], ["excessively_large_fragment"])
    small_limit = Reassembler(DefragConfig(max_datagram=2000))
    whole, weirds = feed(small_limit, split_ipv4(UDP4, [1480, 2960]))
    assert whole == []
    assert weirds == ["excessively_large_fragment"] * 2  # both pieces reaching past 2,000


def test_snapped_fragment_is_refused_with_a_weird() -> None:
    first, _ = split_ipv4(UDP4, [1480])
    hdr = decode_ipv4(memoryview(first))
    got, weirds = Reassembler().add_ipv4(1.0, hdr, memoryview(first[:200]))
    assert got is None
    assert [w.name for w in weirds] == ["incompletely_captured_fragment"]


# -- IPv6 -------------------------------------------------------------------------------------


UDP6 = ipv6("2001:db8::1", "2001:db8::2", 17, udp(5353, 53, bytes(range(256)) * 12))


def test_ipv6_fragments_rebuild_the_packet_without_the_fragment_header() -> None:
    frags = split_ipv6(UDP6, [1448, 2896])
    whole, weirds = feed(Reassembler(), frags[::-1])
    assert whole == [UDP6]
    assert weirds == []


def test_ipv6_unfragmentable_extension_headers_are_kept_and_relinked() -> None:
    hop = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"  # hop-by-hop (next: UDP), PadN
    packet = ipv6("2001:db8::1", "2001:db8::2", 0, udp(1, 2, b"y" * 3000), ext=hop)
    whole, _ = feed(Reassembler(), split_ipv6(packet, [1440], unfrag=48))
    assert whole == [packet]
    hdr = decode_ipv6(memoryview(whole[0]))
    assert (hdr.proto, hdr.header_len, hdr.is_fragment) == (17, 48, False)


def test_ipv6_fragments_with_different_next_headers_are_inconsistent() -> None:
    first, last = split_ipv6(UDP6, [1448])
    odd = bytearray(last)
    odd[40] = 6  # the later piece claims TCP
    whole, weirds = feed(Reassembler(), [bytes(odd), first])
    assert weirds == ["fragment_protocol_inconsistency"]
    assert whole == [UDP6]  # the first fragment's next header is the one that counts


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=4000),
    cuts=st.lists(st.integers(min_value=1, max_value=500), max_size=8),
    order=st.randoms(use_true_random=False),
    v6=st.booleans(),
)
def test_any_fragmentation_in_any_order_reassembles_exactly(
    data: bytes, cuts: list[int], order: random.Random, v6: bool
) -> None:
    packet = (
        ipv6("2001:db8::1", "2001:db8::2", 17, udp(1, 2, data))
        if v6
        else with_checksum(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, data)))
    )
    size = len(packet) - (40 if v6 else 20)
    offsets = sorted({c * 8 for c in cuts if c * 8 < size})
    frags = split_ipv6(packet, offsets) if v6 else split_ipv4(packet, offsets)
    frags += order.sample(frags, k=min(2, len(frags)))  # some duplicates
    order.shuffle(frags)
    reasm = Reassembler()
    whole, weirds = feed(reasm, frags)
    assert whole[:1] == [packet]
    assert set(weirds) <= {"fragment_overlap", "excessively_small_fragment"}


# -- in the pipeline --------------------------------------------------------------------------


def test_pipeline_counts_a_reassembled_datagram_once_with_its_whole_length() -> None:
    frags = [raw(1.0 + i / 100, eth(f)) for i, f in enumerate(split_ipv4(UDP4, [1480, 2960]))]
    records = run_pipeline(frags)
    (conn,) = [r for r in records if isinstance(r, Conn)]
    # Zeek counts the reassembled datagram as one packet of its full IP length.
    assert (conn.orig_pkts, conn.orig_ip_bytes) == (1, len(UDP4))
    assert (conn.orig_p, conn.resp_p, conn.proto) == (1234, 53, "udp")
    assert not [r for r in records if isinstance(r, Weird)]


def test_pipeline_reassembles_ipv6_tcp() -> None:
    packet = ipv6("2001:db8::1", "2001:db8::2", 6, tcp(4000, 80, 0x18, data=b"G" * 2000))
    frags = [raw(2.0, eth(f, ethertype=0x86DD)) for f in split_ipv6(packet, [1448])]
    (conn,) = [r for r in run_pipeline(frags) if isinstance(r, Conn)]
    assert (conn.orig_pkts, conn.orig_ip_bytes, conn.resp_p) == (1, len(packet), 80)


# -- corpus: Zeek's weirds, Suricata's reassembled packets, real fragmented traffic ------------


def _zeek_reassembly_sections() -> list[list[str]]:
    """Zeek's core.reassembly baseline: the weird names per trace, fragmented-1..4 in order."""
    text = (DATA / "zeek-baselines" / "core.reassembly.output").read_text()
    sections = [part.strip().splitlines() for part in text.split("----------------------")[1:]]
    return [
        [line.split(", ")[1] for line in lines if line.startswith("flow weird")]
        for lines in sections[:4]
    ]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_weirds_of_zeek_fragment_traces_match_zeek(n: int) -> None:
    expected = _zeek_reassembly_sections()[n - 1]
    records = run_pipeline(list(open_capture(DATA / f"fragmented-{n}.pcap")))
    ours = [r.name for r in records if isinstance(r, Weird)]
    assert ours == expected


def test_zeek_fragment_trace_4_reassembles_the_overlapping_http_request() -> None:
    # Four pieces, one overlapping with other bytes: Zeek (and we) keep the first copy.
    records = run_pipeline(list(open_capture(DATA / "fragmented-4.pcap")))
    conns = {(c.orig_h, c.orig_p): c for c in records if isinstance(c, Conn)}
    conn = conns[("128.32.46.142", 7790)]
    # The data segment (one datagram from four fragments: 20 + 89 bytes), then the FIN.
    assert (conn.orig_pkts, conn.orig_ip_bytes, conn.history) == (2, 20 + 89 + 40, "DF")


SURICATA_CASES = ["ipv4-tcp-syn", "eth-vlan-ipv4-tcp-syn", "ipv6-tcp", "eth-vlan-ipv6-tcp"]


@pytest.mark.parametrize("case", SURICATA_CASES)
def test_reassembled_bytes_equal_suricatas(case: str) -> None:
    # suricata-verify's test.yaml holds the packet Suricata's defrag built (base64, with the
    # link header when there is one): our datagram must be byte-for-byte the same.
    yaml_text = (DATA / "suricata-expected" / f"defrag-{case}.test.yaml").read_text()
    expected = base64.b64decode(re.findall(r'packet: "([^"]+)"', yaml_text)[0])
    reasm = Reassembler()
    whole: list[bytes] = []
    offset = 0
    for pkt in open_capture(DATA / f"defrag-{case}.pcap"):
        frame = decode_link(pkt.linktype, memoryview(pkt.data))
        offset = frame.offset
        got, _ = feed(reasm, [pkt.data[offset:]])
        whole += got
    assert whole == [expected[offset:]]


def test_real_fragmented_traffic_all_reassembles_without_weirds() -> None:
    records = run_pipeline(list(open_capture(DATA / "frag-v4v6-udp-icmp.pcap")))
    conns = [r for r in records if isinstance(r, Conn)]
    assert not [r for r in records if isinstance(r, Weird)]
    udp_conns = sorted(
        (c.orig_h, c.orig_pkts, c.resp_pkts, c.orig_bytes) for c in conns if c.proto == "udp"
    )
    assert udp_conns == [
        ("10.77.0.1", 3, 3, 1600 + 4000 + 9000),
        ("fd77::1", 3, 3, 1600 + 4000 + 9000),
    ]
    echo = sorted(
        (c.orig_h, c.orig_pkts, c.resp_pkts) for c in conns if c.resp_p == 0 and c.proto == "icmp"
    )
    assert ("10.77.0.1", 2, 2) in echo


def _ipv4_frame(payload: bytes) -> RawPacket:
    return raw(1.0, eth(payload, ethertype=ETH_IPV4))


def test_bad_fragments_never_raise_out_of_the_pipeline() -> None:
    rng = random.Random(3)
    frames = []
    for _ in range(300):
        frag = bytearray(rng.choice(split_ipv4(UDP4, [8, 16, 1480])))
        for _ in range(rng.randint(1, 4)):
            frag[rng.randrange(len(frag))] = rng.randrange(256)
        frames.append(_ipv4_frame(bytes(frag)))
    records = run_pipeline(frames)
    assert all(isinstance(r, Conn | Weird) for r in records)
