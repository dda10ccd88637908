"""Decoders layer by layer: the happy paths and the typed errors."""

from __future__ import annotations

import struct

import pytest

from a2z.agent.decode import (
    DecodeError,
    Malformed,
    Truncated,
    Unsupported,
    decode_arp,
    decode_icmp,
    decode_icmp6,
    decode_ipv4,
    decode_ipv6,
    decode_link,
    decode_tcp,
    decode_udp,
    icmp_counterpart,
)
from tests.agent.packet_builder import ACK, SYN, eth, icmp, ipv4, ipv6, tcp, udp

IP4 = ipv4("192.0.2.1", "198.51.100.2", 17, udp(1, 2, b"hi"))
IP6 = ipv6("2001:db8::1", "2001:db8::2", 17, udp(1, 2, b"hi"))


def mv(data: bytes) -> memoryview:
    return memoryview(data)


def test_ethernet_with_qinq_tags_reports_vlans_and_inner_ethertype() -> None:
    frame = eth(IP4, vlans=(100, 200))
    link = decode_link(1, mv(frame))
    assert (link.ethertype, link.offset, link.vlans) == (0x0800, 22, (100, 200))


def test_ethernet_8023_length_field_is_not_ip() -> None:
    frame = b"\x01" * 12 + struct.pack("!H", 46) + b"\xaa" * 46
    assert decode_link(1, mv(frame)).ethertype == 0


@pytest.mark.parametrize(
    ("linktype", "header", "ethertype", "offset"),
    [
        (113, b"\x00\x00\x00\x01\x00\x06" + b"\x00" * 8 + b"\x86\xdd", 0x86DD, 16),  # SLL
        (276, b"\x08\x00\x00\x00" + b"\x00" * 16, 0x0800, 20),  # SLL2
        (0, struct.pack("<I", 2), 0x0800, 4),  # NULL, little-endian host
        (0, struct.pack(">I", 30), 0x86DD, 4),  # NULL, big-endian host (macOS AF_INET6)
        (108, struct.pack(">I", 24), 0x86DD, 4),  # LOOP, always big-endian
        (9, b"\xff\x03\x00\x21", 0x0800, 4),  # PPP in HDLC framing
        (9, b"\x57", 0x86DD, 1),  # PPP with a compressed protocol field
    ],
)
def test_other_link_types_find_the_network_header(
    linktype: int, header: bytes, ethertype: int, offset: int
) -> None:
    link = decode_link(linktype, mv(header + IP4))
    assert (link.ethertype, link.offset) == (ethertype, offset)


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_link_types_use_the_version_nibble(linktype: int) -> None:
    assert decode_link(linktype, mv(IP4)).ethertype == 0x0800
    assert decode_link(linktype, mv(IP6)).ethertype == 0x86DD
    with pytest.raises(Malformed):
        decode_link(linktype, mv(b"\x50" + IP4[1:]))


def test_unknown_link_type_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="unknown_linktype"):
        decode_link(147, mv(b"\x00" * 20))


def test_too_many_vlan_tags_is_malformed() -> None:
    with pytest.raises(Malformed, match="too_many_vlan_tags"):
        decode_link(1, mv(eth(IP4, vlans=tuple(range(9)))))


def test_ipv4_header_fields_and_fragment_flags() -> None:
    packet = bytearray(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, SYN), frag=0x2000 | 3))
    hdr = decode_ipv4(mv(bytes(packet)))
    assert (hdr.src, hdr.dst, hdr.proto, hdr.header_len, hdr.total_len) == (
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
        6,
        20,
        40,
    )
    assert (hdr.more_fragments, hdr.frag_offset, hdr.is_fragment) == (True, 24, True)


def test_ipv4_options_are_skipped_by_header_length() -> None:
    packet = bytearray(ipv4("10.0.0.1", "10.0.0.2", 17, b"\x01\x01\x01\x00" + udp(1, 2)))
    packet[0] = 0x46
    assert decode_ipv4(mv(bytes(packet))).header_len == 24


@pytest.mark.parametrize(
    ("packet", "error", "name"),
    [
        (IP4[:19], Truncated, "truncated_ip_header"),
        (b"\x65" + IP4[1:], Malformed, "ip_bad_version"),
        (b"\x44" + IP4[1:], Malformed, "ip_bad_header_len"),
        (b"\x4f" + IP4[1:], Truncated, "truncated_ip_header"),
        (IP4[:2] + b"\x00\x10" + IP4[4:], Malformed, "ip_bad_total_len"),
    ],
)
def test_ipv4_errors(packet: bytes, error: type[DecodeError], name: str) -> None:
    with pytest.raises(error) as info:
        decode_ipv4(mv(packet))
    assert (info.value.name, info.value.source) == (name, "IP")


def test_ipv6_walks_hop_by_hop_routing_and_fragment_headers() -> None:
    hop = bytes([43, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next: routing; 8 bytes
    routing = bytes([44, 2, 0, 1, 0, 0, 0, 0]) + b"\x00" * 16  # next: fragment; 24 bytes
    fragment = bytes([17, 0]) + struct.pack("!HI", 0x0001, 77)  # next: UDP; offset 0, M=1
    packet = ipv6("2001:db8::1", "2001:db8::2", 0, udp(5, 6, b"x"), ext=hop + routing + fragment)
    hdr = decode_ipv6(mv(packet))
    assert (hdr.proto, hdr.header_len, hdr.frag_ident, hdr.more_fragments) == (17, 80, 77, True)
    assert hdr.total_len == len(packet)
    assert decode_udp(mv(packet[hdr.header_len :])).sport == 5


def test_ipv6_later_fragment_stops_the_walk() -> None:
    fragment = bytes([6, 0]) + struct.pack("!HI", 185 << 3, 1)
    hdr = decode_ipv6(mv(ipv6("::1", "::2", 44, b"\x00" * 40, ext=fragment)))
    assert (hdr.proto, hdr.frag_offset, hdr.is_fragment) == (6, 1480, True)


def test_ipv6_truncated_extension_header() -> None:
    with pytest.raises(Truncated, match="truncated_ipv6_ext_header"):
        decode_ipv6(mv(ipv6("::1", "::2", 60, b"\x11\x05")))


def test_tcp_header_fields() -> None:
    hdr = decode_tcp(mv(tcp(443, 50000, SYN | ACK, seq=7, ack=9, data=b"abc")))
    assert (hdr.sport, hdr.dport, hdr.seq, hdr.ack, hdr.flags, hdr.header_len) == (
        443,
        50000,
        7,
        9,
        SYN | ACK,
        20,
    )


def test_tcp_bad_and_truncated_header_lengths() -> None:
    segment = bytearray(tcp(1, 2, ACK))
    segment[12] = 4 << 4
    with pytest.raises(Malformed, match="bad_tcp_header_len"):
        decode_tcp(mv(bytes(segment)))
    segment[12] = 15 << 4
    with pytest.raises(Truncated, match="truncated_tcp_header"):
        decode_tcp(mv(bytes(segment)))


def test_udp_and_icmp_headers() -> None:
    assert decode_udp(mv(udp(53, 9999, b"abcd"))).length == 12
    with pytest.raises(Truncated):
        decode_udp(mv(b"\x00" * 7))
    echo = decode_icmp(mv(icmp(8)))
    assert icmp_counterpart(echo) == (0, False)
    unreachable = decode_icmp(mv(icmp(3, 1)))
    assert icmp_counterpart(unreachable) == (1, True)
    neighbour = decode_icmp6(mv(icmp(135)))
    assert icmp_counterpart(neighbour) == (136, False)
    with pytest.raises(Truncated, match="truncated_icmp6_header"):
        decode_icmp6(mv(b"\x80\x00\x00"))


def test_arp_is_decoded_enough_to_count() -> None:
    arp = bytes.fromhex("0001080006040001") + b"\x02" * 6 + bytes([10, 0, 0, 1])
    arp += b"\x00" * 6 + bytes([10, 0, 0, 2])
    hdr = decode_arp(mv(arp))
    assert (hdr.op, hdr.sender_ip, hdr.target_ip) == (1, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    with pytest.raises(Truncated):
        decode_arp(mv(arp[:20]))
