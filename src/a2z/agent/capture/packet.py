"""The unit every capture source yields: one link-layer frame and its metadata."""

from __future__ import annotations

from typing import NamedTuple


class RawPacket(NamedTuple):
    """One captured frame, before any decoding.

    A NamedTuple (immutable, like the frozen dataclass it was): one is built per packet by the
    interpreted capture readers, and a frozen dataclass's ``__init__`` cost about 5 % of a
    replay (ADR 0006).
    """

    ts: float  # capture time, epoch seconds
    linktype: int  # LINKTYPE_* of the frame (1 Ethernet, 113 Linux SLL, 101 raw IP, ...)
    data: bytes  # captured bytes (may be shorter than wirelen when snapped)
    wirelen: int  # length of the frame on the wire
