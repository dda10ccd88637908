"""IPv6 header decoding, walking extension headers to the upper-layer protocol."""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from a2z.agent.decode.errors import Malformed, Truncated

_HEADER: Final = struct.Struct("!IHBB16s16s")
_FRAGMENT: Final = struct.Struct("!BBHI")

HOP_BY_HOP: Final = 0
ROUTING: Final = 43
FRAGMENT: Final = 44
ESP: Final = 50
AH: Final = 51
NO_NEXT_HEADER: Final = 59
DEST_OPTS: Final = 60
MOBILITY: Final = 135
_GENERIC_EXT: Final = frozenset({HOP_BY_HOP, ROUTING, DEST_OPTS, MOBILITY})
MAX_EXT_HEADERS: Final = 16


class IPv6Header(NamedTuple):
    """The fixed IPv6 header plus what the extension-header walk found."""

    traffic_class: int  # DSCP+ECN byte
    flow_label: int  # 20-bit flow label
    payload_len: int  # the payload-length field (extension headers included)
    next_header: int  # next-header field of the fixed header
    hop_limit: int  # hop limit
    src: bytes  # 16-byte source address
    dst: bytes  # 16-byte destination address
    proto: int  # upper-layer protocol after the extension headers
    header_len: int  # fixed header plus extension headers: where the upper layer starts
    frag_offset: int = 0  # fragment offset in bytes, from a fragment header
    more_fragments: bool = False  # M flag of a fragment header
    frag_ident: int | None = None  # identification, if there was a fragment header
    frag_at: int = 0  # offset of the fragment header (0: none); the unfragmentable part ends here
    frag_nh_at: int = 0  # offset of the next-header byte that names the fragment header

    @property
    def total_len(self) -> int:
        """Bytes of the whole packet as sent: 40 plus the payload length."""
        return 40 + self.payload_len

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram, including the first."""
        return self.more_fragments or self.frag_offset > 0


def decode_ipv6(buf: memoryview) -> IPv6Header:
    """Decode an IPv6 header and walk hop-by-hop, routing, dest-opts, fragment and AH headers."""
    if len(buf) < 40:
        raise Truncated("IP", "truncated_ipv6_header", f"{len(buf)} bytes")
    vtcfl, payload_len, next_header, hop_limit, src, dst = _HEADER.unpack_from(buf)
    version = vtcfl >> 28
    if version != 6:
        raise Malformed("IP", "ipv6_bad_version", f"version {version}")
    nh = next_header
    off = 40
    frag_offset = 0
    more = False
    ident: int | None = None
    nh_at = 6  # where the current next-header value was read from
    frag_at = frag_nh_at = 0
    for _ in range(MAX_EXT_HEADERS):
        if nh in _GENERIC_EXT or nh == AH:
            if off + 2 > len(buf):
                raise Truncated("IP", "truncated_ipv6_ext_header", f"header {nh}")
            length = (buf[off + 1] + 2) * 4 if nh == AH else (buf[off + 1] + 1) * 8
            if off + length > len(buf):
                raise Truncated("IP", "truncated_ipv6_ext_header", f"header {nh}")
            nh = buf[off]
            nh_at = off
            off += length
        elif nh == FRAGMENT:
            if off + 8 > len(buf):
                raise Truncated("IP", "truncated_ipv6_ext_header", "fragment")
            if frag_at:
                raise Malformed("IP", "ipv6_multiple_fragment_headers")
            nxt, _res, offflags, ident = _FRAGMENT.unpack_from(buf, off)
            frag_offset = offflags & 0xFFF8
            more = bool(offflags & 1)
            frag_at, frag_nh_at = off, nh_at
            nh = nxt
            nh_at = off
            off += 8
            if frag_offset:
                break  # a later fragment: what follows is payload, not headers
        else:
            break
    else:
        raise Malformed("IP", "ipv6_too_many_ext_headers")
    return IPv6Header(
        (vtcfl >> 20) & 0xFF,
        vtcfl & 0xFFFFF,
        payload_len,
        next_header,
        hop_limit,
        src,
        dst,
        nh,
        off,
        frag_offset,
        more,
        ident,
        frag_at,
        frag_nh_at,
    )
