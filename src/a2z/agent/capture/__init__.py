"""Packet sources: the first stage of the agent pipeline (pcap/pcapng files, live AF_PACKET)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from a2z.agent.capture.errors import CaptureError, CaptureFormatError, CaptureOpenError
from a2z.agent.capture.packet import RawPacket
from a2z.agent.capture.pcap_file import CaptureReader, CaptureStats, open_capture

if TYPE_CHECKING:
    from a2z.agent.capture.af_packet import AfPacketSource, CaptureCounters, RingConfig
    from a2z.agent.capture.bpf import FilterError, compile_bpf

# The live-capture names are loaded when first used: a replay needs neither AF_PACKET nor
# ctypes and libpcap's filter compiler, which were 1.4 MiB of its peak RSS (ADR 0006).
_LIVE: dict[str, str] = {
    "AfPacketSource": "af_packet",
    "CaptureCounters": "af_packet",
    "RingConfig": "af_packet",
    "FilterError": "bpf",
    "compile_bpf": "bpf",
}


def __getattr__(name: str) -> object:
    module = _LIVE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


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
