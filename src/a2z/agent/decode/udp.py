"""UDP header decoding."""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from a2z.agent.decode.errors import Truncated

_HEADER: Final = struct.Struct("!HHHH")


class UDPHeader(NamedTuple):
    """The 8-byte UDP header."""

    sport: int  # source port
    dport: int  # destination port
    length: int  # length field: header plus payload
    checksum: int  # checksum as sent (not verified)


def decode_udp(buf: memoryview) -> UDPHeader:
    """Decode a UDP header from the start of ``buf``."""
    if len(buf) < 8:
        raise Truncated("UDP", "truncated_udp_header", f"{len(buf)} bytes")
    return UDPHeader(*_HEADER.unpack_from(buf))
