"""Link layer: frame bytes of a given LINKTYPE to the network protocol and its offset."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, NamedTuple

from a2z.agent.decode.errors import Malformed, Truncated, Unsupported

ETH_IPV4: Final = 0x0800
ETH_ARP: Final = 0x0806
ETH_IPV6: Final = 0x86DD
_VLAN_TPIDS: Final = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
MAX_VLAN_TAGS: Final = 8

LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_PPP: Final = 9
LINKTYPE_PPP_HDLC: Final = 50
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
_DLT_RAW_12: Final = 12  # DLT_RAW on most BSDs
_DLT_RAW_14: Final = 14  # DLT_RAW on OpenBSD

# BSD loopback address families (AF_INET6 differs by OS: 24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS;
# 10 is Linux).
_AF_INET: Final = 2
_AF_INET6: Final = frozenset({10, 24, 28, 30})

_U16: Final = struct.Struct("!H")


class LinkFrame(NamedTuple):
    """Result of link decoding: what follows the link header and where it starts."""

    ethertype: int  # network protocol (0x0800 IPv4, 0x86DD IPv6, 0x0806 ARP, 0 = not Ethernet II)
    offset: int  # byte offset of the network header inside the frame
    vlans: tuple[int, ...] = ()  # VLAN ids, outermost first


class ArpHeader(NamedTuple):
    """Enough of an ARP packet to count it."""

    op: int  # 1 request, 2 reply
    sender_ip: bytes  # 4 bytes for IPv4-over-Ethernet
    target_ip: bytes


def decode_ethernet(buf: memoryview) -> LinkFrame:
    """Ethernet II with any number (up to 8) of 802.1Q / 802.1ad / QinQ tags."""
    if len(buf) < 14:
        raise Truncated("ETHERNET", "truncated_ethernet_header", f"{len(buf)} bytes")
    (etype,) = _U16.unpack_from(buf, 12)
    off = 14
    vlans: list[int] = []
    while etype in _VLAN_TPIDS:
        if len(vlans) >= MAX_VLAN_TAGS:
            raise Malformed("ETHERNET", "too_many_vlan_tags")
        if off + 4 > len(buf):
            raise Truncated("ETHERNET", "truncated_vlan_header")
        tci, etype = struct.unpack_from("!HH", buf, off)
        vlans.append(tci & 0x0FFF)
        off += 4
    if etype < 0x0600:
        etype = 0  # an 802.3 length field: LLC/SNAP follows, not an IP packet
    return LinkFrame(etype, off, tuple(vlans))


def decode_sll(buf: memoryview) -> LinkFrame:
    """Linux cooked capture v1 (``tcpdump -i any``)."""
    if len(buf) < 16:
        raise Truncated("SLL", "truncated_sll_header", f"{len(buf)} bytes")
    (proto,) = _U16.unpack_from(buf, 14)
    return LinkFrame(proto, 16)


def decode_sll2(buf: memoryview) -> LinkFrame:
    """Linux cooked capture v2."""
    if len(buf) < 20:
        raise Truncated("SLL2", "truncated_sll2_header", f"{len(buf)} bytes")
    (proto,) = _U16.unpack_from(buf, 0)
    return LinkFrame(proto, 20)


def decode_raw(buf: memoryview) -> LinkFrame:
    """Raw IP (no link header): the IP version nibble says v4 or v6."""
    if len(buf) < 1:
        raise Truncated("RAW", "truncated_raw_ip")
    version = buf[0] >> 4
    if version == 4:
        return LinkFrame(ETH_IPV4, 0)
    if version == 6:
        return LinkFrame(ETH_IPV6, 0)
    raise Malformed("RAW", "raw_ip_bad_version", f"version {version}")


def decode_null(buf: memoryview) -> LinkFrame:
    """BSD loopback: a 4-byte address family in the capturing host's byte order."""
    if len(buf) < 4:
        raise Truncated("NULL", "truncated_null_header")
    (family,) = struct.unpack_from("<I", buf, 0)
    if family > 0xFFFF:  # written big-endian by the capturing host
        (family,) = struct.unpack_from(">I", buf, 0)
    return _family_frame(family)


def decode_loop(buf: memoryview) -> LinkFrame:
    """OpenBSD loopback: like NULL but the family is always big-endian."""
    if len(buf) < 4:
        raise Truncated("LOOP", "truncated_loop_header")
    (family,) = struct.unpack_from(">I", buf, 0)
    return _family_frame(family)


def _family_frame(family: int) -> LinkFrame:
    if family == _AF_INET:
        return LinkFrame(ETH_IPV4, 4)
    if family in _AF_INET6:
        return LinkFrame(ETH_IPV6, 4)
    return LinkFrame(0, 4)


def decode_ppp(buf: memoryview) -> LinkFrame:
    """PPP, with or without the HDLC address/control bytes and protocol-field compression."""
    off = 2 if len(buf) >= 2 and buf[0] == 0xFF and buf[1] == 0x03 else 0
    if len(buf) < off + 1:
        raise Truncated("PPP", "truncated_ppp_header")
    if buf[off] & 1:  # a compressed, one-byte protocol field
        proto, off = buf[off], off + 1
    else:
        if len(buf) < off + 2:
            raise Truncated("PPP", "truncated_ppp_header")
        (proto,) = _U16.unpack_from(buf, off)
        off += 2
    return LinkFrame(_PPP_PROTOCOLS.get(proto, 0), off)


_PPP_PROTOCOLS: Final = {0x0021: ETH_IPV4, 0x0057: ETH_IPV6}


def _decode_ipv4_only(buf: memoryview) -> LinkFrame:
    return LinkFrame(ETH_IPV4, 0)


def _decode_ipv6_only(buf: memoryview) -> LinkFrame:
    return LinkFrame(ETH_IPV6, 0)


_DECODERS: dict[int, Callable[[memoryview], LinkFrame]] = {
    LINKTYPE_NULL: decode_null,
    LINKTYPE_ETHERNET: decode_ethernet,
    LINKTYPE_PPP: decode_ppp,
    LINKTYPE_PPP_HDLC: decode_ppp,
    _DLT_RAW_12: decode_raw,
    _DLT_RAW_14: decode_raw,
    LINKTYPE_RAW: decode_raw,
    LINKTYPE_LOOP: decode_loop,
    LINKTYPE_LINUX_SLL: decode_sll,
    LINKTYPE_IPV4: _decode_ipv4_only,
    LINKTYPE_IPV6: _decode_ipv6_only,
    LINKTYPE_LINUX_SLL2: decode_sll2,
}


def decode_link(linktype: int, buf: memoryview) -> LinkFrame:
    """Decode the link header of a frame; raise Unsupported for a link type we do not know."""
    decoder = _DECODERS.get(linktype)
    if decoder is None:
        raise Unsupported("LINK", "unknown_linktype", f"linktype {linktype}")
    return decoder(buf)


def decode_arp(buf: memoryview) -> ArpHeader:
    """ARP for IPv4 over Ethernet (other hardware/protocol sizes give empty addresses)."""
    if len(buf) < 8:
        raise Truncated("ARP", "truncated_arp")
    _htype, _ptype, hlen, plen, op = struct.unpack_from("!HHBBH", buf, 0)
    end = 8 + 2 * (hlen + plen)
    if len(buf) < end:
        raise Truncated("ARP", "truncated_arp")
    sender = bytes(buf[8 + hlen : 8 + hlen + plen])
    target = bytes(buf[8 + 2 * hlen + plen : end])
    return ArpHeader(op, sender, target)
