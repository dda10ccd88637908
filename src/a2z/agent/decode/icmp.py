"""ICMP and ICMPv6 header decoding, and Zeek's request/reply pairing of ICMP types."""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from a2z.agent.decode.errors import Truncated

_HEADER: Final = struct.Struct("!BBHI")
ICMP_MIN_LEN: Final = 8  # Zeek's ICMP_MINLEN: type, code, checksum and the 4-byte rest-of-header

# Zeek's ICMP4_counterpart/ICMP6_counterpart: types that come in request/reply pairs. The pair
# shares one connection; id.resp_p is the counterpart type. Other types are one-way and use
# the code as id.resp_p.
_ICMP4_PAIRS: Final = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS: Final = {
    128: 129,
    129: 128,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    130: 131,
    131: 130,
    139: 140,
    140: 139,
    144: 145,
    145: 144,
}


class ICMPHeader(NamedTuple):
    """The common 8 bytes of an ICMP or ICMPv6 message."""

    type: int  # message type
    code: int  # message code
    checksum: int  # checksum as sent (not verified)
    rest: int  # rest of header (echo: id << 16 | seq)
    v6: bool  # ICMPv6 rather than ICMP


def decode_icmp(buf: memoryview) -> ICMPHeader:
    """Decode an ICMP (IPv4) header."""
    if len(buf) < ICMP_MIN_LEN:
        raise Truncated("ICMP", "truncated_icmp_header", f"{len(buf)} bytes")
    itype, code, checksum, rest = _HEADER.unpack_from(buf)
    return ICMPHeader(itype, code, checksum, rest, False)


def decode_icmp6(buf: memoryview) -> ICMPHeader:
    """Decode an ICMPv6 header."""
    if len(buf) < ICMP_MIN_LEN:
        raise Truncated("ICMP", "truncated_icmp6_header", f"{len(buf)} bytes")
    itype, code, checksum, rest = _HEADER.unpack_from(buf)
    return ICMPHeader(itype, code, checksum, rest, True)


def icmp_counterpart(header: ICMPHeader) -> tuple[int, bool]:
    """Zeek's id.resp_p for an ICMP message and whether the message is one-way."""
    pairs = _ICMP6_PAIRS if header.v6 else _ICMP4_PAIRS
    other = pairs.get(header.type)
    if other is None:
        return header.code, True
    return other, False
