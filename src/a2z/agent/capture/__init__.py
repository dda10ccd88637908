"""Packet sources: the first stage of the agent pipeline (pcap/pcapng files, live AF_PACKET)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from a2z.agent.capture.af_packet import AfPacketSource, CaptureCounters, RingConfig
from a2z.agent.capture.bpf import FilterError, compile_bpf
from a2z.agent.capture.errors import CaptureError, CaptureFormatError, CaptureOpenError
from a2z.agent.capture.packet import RawPacket
from a2z.agent.capture.pcap_file import CaptureReader, CaptureStats, open_capture


class PacketSource(Protocol):
    """Anything that yields raw frames: files, AF_PACKET; the seam for a libpcap source."""

    def __iter__(self) -> Iterator[RawPacket]: ...


__all__ = [
    "AfPacketSource",
    "CaptureCounters",
    "CaptureError",
    "CaptureFormatError",
    "CaptureOpenError",
    "CaptureReader",
    "CaptureStats",
    "FilterError",
    "PacketSource",
    "RawPacket",
    "RingConfig",
    "compile_bpf",
    "open_capture",
]
