"""Decoders: bytes in, typed headers out (link, IPv4/IPv6, TCP, UDP, ICMP); no I/O, no state.

Headers are NamedTuples, not frozen dataclasses: several are built for every packet, and on
CPython 3.11 a 12-field NamedTuple is built in 0.25 us against 1.3 us for a frozen slotted
dataclass (whose __init__ goes through object.__setattr__ per field); immutable either way.
``reassembly`` is the one stateful stage here (fragments wait for their datagram).
"""

from __future__ import annotations

from a2z.agent.decode.errors import DecodeError, Malformed, Truncated, Unsupported
from a2z.agent.decode.icmp import ICMPHeader, decode_icmp, decode_icmp6, icmp_counterpart
from a2z.agent.decode.ipv4 import IPv4Header, decode_ipv4
from a2z.agent.decode.ipv6 import IPv6Header, decode_ipv6
from a2z.agent.decode.link import ArpHeader, LinkFrame, decode_arp, decode_link
from a2z.agent.decode.tcp import TCPHeader, decode_tcp
from a2z.agent.decode.udp import UDPHeader, decode_udp

__all__ = [
    "ArpHeader",
    "DecodeError",
    "ICMPHeader",
    "IPv4Header",
    "IPv6Header",
    "LinkFrame",
    "Malformed",
    "TCPHeader",
    "Truncated",
    "UDPHeader",
    "Unsupported",
    "decode_arp",
    "decode_icmp",
    "decode_icmp6",
    "decode_ipv4",
    "decode_ipv6",
    "decode_link",
    "decode_tcp",
    "decode_udp",
    "icmp_counterpart",
]
