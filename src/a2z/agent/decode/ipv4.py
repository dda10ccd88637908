"""IPv4 header decoding: addresses, lengths and fragment fields; options are skipped."""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from a2z.agent.decode.errors import Malformed, Truncated

_HEADER: Final = struct.Struct("!BBHHHBBH4s4s")


class IPv4Header(NamedTuple):
    """The fixed IPv4 header; ``header_len`` includes options."""

    header_len: int  # bytes, 20..60
    tos: int  # type of service / DSCP+ECN byte
    total_len: int  # the total-length field: header plus payload (0 with TSO)
    ident: int  # identification, groups fragments
    dont_fragment: bool  # DF flag
    more_fragments: bool  # MF flag
    frag_offset: int  # fragment offset in bytes (the field times 8)
    ttl: int  # time to live
    proto: int  # upper-layer protocol number (6 TCP, 17 UDP, 1 ICMP)
    checksum: int  # header checksum as sent (not verified)
    src: bytes  # 4-byte source address
    dst: bytes  # 4-byte destination address

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram, including the first."""
        return self.more_fragments or self.frag_offset > 0


def decode_ipv4(buf: memoryview) -> IPv4Header:
    """Decode an IPv4 header from the start of ``buf``."""
    if len(buf) < 20:
        raise Truncated("IP", "truncated_ip_header", f"{len(buf)} bytes")
    vihl, tos, total_len, ident, frag, ttl, proto, checksum, src, dst = _HEADER.unpack_from(buf)
    version = vihl >> 4
    if version != 4:
        raise Malformed("IP", "ip_bad_version", f"version {version}")
    header_len = (vihl & 0x0F) * 4
    if header_len < 20:
        raise Malformed("IP", "ip_bad_header_len", f"{header_len} bytes")
    if header_len > len(buf):
        raise Truncated("IP", "truncated_ip_header", f"options need {header_len} bytes")
    if total_len and total_len < header_len:
        raise Malformed("IP", "ip_bad_total_len", f"{total_len} < header {header_len}")
    return IPv4Header(
        header_len,
        tos,
        total_len,
        ident,
        bool(frag & 0x4000),
        bool(frag & 0x2000),
        (frag & 0x1FFF) * 8,
        ttl,
        proto,
        checksum,
        src,
        dst,
    )
