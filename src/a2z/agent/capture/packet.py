"""The unit every capture source yields: one link-layer frame and its metadata."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawPacket:
    """One captured frame, before any decoding."""

    ts: float  # capture time, epoch seconds
    linktype: int  # LINKTYPE_* of the frame (1 Ethernet, 113 Linux SLL, 101 raw IP, ...)
    data: bytes  # captured bytes (may be shorter than wirelen when snapped)
    wirelen: int  # length of the frame on the wire
