"""Fuzz target: link, IP and transport decoders on one arbitrary frame (no state)."""

from __future__ import annotations

from collections.abc import Iterator

from _harness import capture_files, run
from a2z.agent.capture import CaptureError, open_capture
from a2z.agent.decode import (
    DecodeError,
    decode_arp,
    decode_icmp,
    decode_icmp6,
    decode_ipv4,
    decode_ipv6,
    decode_link,
    decode_tcp,
    decode_udp,
)
from a2z.agent.decode.link import ETH_ARP, ETH_IPV4, ETH_IPV6

# The first input byte picks the link type (the ones our reader meets, plus one unknown).
LINKTYPES = (1, 0, 9, 12, 14, 50, 101, 108, 113, 228, 229, 276, 147)


def test_one_input(data: bytes) -> None:
    """Decode as far as the bytes allow: only DecodeError may escape a decoder."""
    if not data:
        return
    buf = memoryview(data[1:])
    try:
        frame = decode_link(LINKTYPES[data[0] % len(LINKTYPES)], buf)
        net = buf[frame.offset :]
        if frame.ethertype == ETH_ARP:
            decode_arp(net)
            return
        if frame.ethertype == ETH_IPV4:
            ip4 = decode_ipv4(net)
            proto, seg, v6 = ip4.proto, net[ip4.header_len :], False
        elif frame.ethertype == ETH_IPV6:
            ip6 = decode_ipv6(net)
            assert ip6.header_len <= len(net)
            proto, seg, v6 = ip6.proto, net[ip6.header_len :], True
        else:
            return
        if proto == 6:
            tcp = decode_tcp(seg)
            assert 20 <= tcp.header_len <= len(seg)
        elif proto == 17:
            decode_udp(seg)
        elif proto in (1, 58):
            (decode_icmp6 if v6 else decode_icmp)(seg)
    except DecodeError:
        pass


def seeds() -> Iterator[bytes]:
    """Each distinct frame of the test captures, prefixed with its link-type selector."""
    seen: set[bytes] = set()
    for path in capture_files():
        try:
            reader = open_capture(path)
        except CaptureError:
            continue
        with reader:
            for pkt in reader:
                if pkt.linktype in LINKTYPES:
                    seed = bytes([LINKTYPES.index(pkt.linktype)]) + pkt.data[:2048]
                    if seed not in seen:
                        seen.add(seed)
                        yield seed


if __name__ == "__main__":
    run(test_one_input, seeds)
