"""TCP header decoding; options are skipped (their length is in ``header_len``)."""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from a2z.agent.decode.errors import Malformed, Truncated

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

_HEADER: Final = struct.Struct("!HHIIBBHHH")


class TCPHeader(NamedTuple):
    """The TCP header fields flow tracking needs."""

    sport: int  # source port
    dport: int  # destination port
    seq: int  # sequence number
    ack: int  # acknowledgement number
    header_len: int  # bytes including options, 20..60
    flags: int  # FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE CWR (and NS=0x100)
    window: int  # advertised window (unscaled)
    checksum: int  # checksum as sent (not verified)
    urgent: int  # urgent pointer


def decode_tcp(buf: memoryview) -> TCPHeader:
    """Decode a TCP header from the start of ``buf``."""
    if len(buf) < 20:
        raise Truncated("TCP", "truncated_tcp_header", f"{len(buf)} bytes")
    sport, dport, seq, ack, off_ns, flags, window, checksum, urgent = _HEADER.unpack_from(buf)
    header_len = (off_ns >> 4) * 4
    if header_len < 20:
        raise Malformed("TCP", "bad_tcp_header_len", f"{header_len} bytes")
    if header_len > len(buf):
        raise Truncated("TCP", "truncated_tcp_header", f"options need {header_len} bytes")
    return TCPHeader(
        sport, dport, seq, ack, header_len, flags | ((off_ns & 1) << 8), window, checksum, urgent
    )
