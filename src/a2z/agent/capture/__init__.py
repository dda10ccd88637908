"""Packet sources: the first stage of the agent pipeline (file today, AF_PACKET later)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from a2z.agent.capture.errors import CaptureError, CaptureFormatError, CaptureOpenError
from a2z.agent.capture.packet import RawPacket
from a2z.agent.capture.pcap_file import CaptureReader, CaptureStats, open_capture


class PacketSource(Protocol):
    """Anything that yields raw frames; the seam for live AF_PACKET and libpcap sources."""

    def __iter__(self) -> Iterator[RawPacket]: ...


__all__ = [
    "CaptureError",
    "CaptureFormatError",
    "CaptureOpenError",
    "CaptureReader",
    "CaptureStats",
    "PacketSource",
    "RawPacket",
    "open_capture",
]
