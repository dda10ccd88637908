"""Builds Ethernet/IP/TCP/UDP/ICMP frames for tests (checksums left zero: nothing verifies them)."""

from __future__ import annotations

import socket
import struct

from a2z.agent.capture import RawPacket
from a2z.agent.decode.tcp import ACK, FIN, RST, SYN

__all__ = ["ACK", "FIN", "RST", "SYN", "eth", "icmp", "ipv4", "ipv6", "raw", "tcp", "udp"]


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, frag: int = 0, ttl: int = 64) -> bytes:
    """An IPv4 packet with a 20-byte header."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        frag,
        ttl,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, *, ext: bytes = b"") -> bytes:
    """An IPv6 packet; ``ext`` is inserted verbatim between the header and the payload."""
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(ext) + len(payload),
        next_header,
        64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return header + ext + payload


def tcp(
    sport: int, dport: int, flags: int, *, seq: int = 1000, ack: int = 0, data: bytes = b""
) -> bytes:
    """A TCP segment with a 20-byte header."""
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data


def udp(sport: int, dport: int, data: bytes = b"") -> bytes:
    """A UDP datagram."""
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def icmp(itype: int, code: int = 0, data: bytes = b"") -> bytes:
    """An ICMP/ICMPv6 message with a zero rest-of-header."""
    return struct.pack("!BBHI", itype, code, 0, 0) + data


def eth(payload: bytes, *, ethertype: int = 0x0800, vlans: tuple[int, ...] = ()) -> bytes:
    """An Ethernet II frame, with 802.1Q tags if ``vlans`` is given."""
    tags = b"".join(struct.pack("!HH", 0x8100, vid) for vid in vlans)
    return b"\x02" * 6 + b"\x04" * 6 + tags + struct.pack("!H", ethertype) + payload


def raw(ts: float, frame: bytes, *, linktype: int = 1) -> RawPacket:
    """Wrap a frame as a captured packet (not snapped)."""
    return RawPacket(ts, linktype, frame, len(frame))
