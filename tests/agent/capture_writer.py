"""Builds pcap/pcapng bytes in either byte order, so tests can cover what the corpus lacks."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from a2z.agent.capture import RawPacket


def pcap_bytes(
    packets: Sequence[RawPacket], *, endian: str = "<", nano: bool = False, linktype: int = 1
) -> bytes:
    """A classic pcap file: µs or ns magic, little- or big-endian."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    scale = 1_000_000_000 if nano else 1_000_000
    for pkt in packets:
        ticks = round(pkt.ts * scale)
        sec, frac = divmod(ticks, scale)
        out.append(struct.pack(endian + "IIII", sec, frac, len(pkt.data), pkt.wirelen))
        out.append(pkt.data)
    return b"".join(out)


def _block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(endian + "II", btype, total) + body + struct.pack(endian + "I", total)


def shb(endian: str = "<") -> bytes:
    """A section header block with no options."""
    return _block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(endian: str = "<", *, linktype: int = 1, tsresol: int | None = None) -> bytes:
    """An interface description block, optionally with if_tsresol."""
    body = struct.pack(endian + "HHI", linktype, 0, 0)
    if tsresol is not None:
        body += struct.pack(endian + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0"
        body += struct.pack(endian + "HH", 0, 0)
    return _block(endian, 1, body)


def epb(endian: str, iface: int, ticks: int, data: bytes, wirelen: int | None = None) -> bytes:
    """An enhanced packet block with a raw 64-bit timestamp in the interface's units."""
    body = struct.pack(
        endian + "IIIII",
        iface,
        ticks >> 32,
        ticks & 0xFFFFFFFF,
        len(data),
        len(data) if wirelen is None else wirelen,
    )
    return _block(endian, 6, body + data)


def spb(endian: str, data: bytes) -> bytes:
    """A simple packet block (no timestamp, interface 0)."""
    return _block(endian, 3, struct.pack(endian + "I", len(data)) + data)


def custom_block(endian: str) -> bytes:
    """A block type readers must skip (a name resolution block with no records)."""
    return _block(endian, 4, struct.pack(endian + "HH", 0, 0))
