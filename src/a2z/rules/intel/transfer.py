"""Deltas cut into channel-sized parts and put back together (server -> agent, ADR 12).

Each part is itself an ``IntelDelta`` (same base, version and ``full``) holding a slice of the
added and removed indicators, msgpack-encoded, zstd-compressed and base64-armoured so it rides
in a JSON control frame. Joined, the parts are the original delta.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import zstandard

from a2z.rules.intel.delta import (
    MAX_DELTA_BYTES,
    DeltaError,
    IndicatorKey,
    IntelDelta,
    decode_delta,
    encode_delta,
)
from a2z.rules.intel.indicators import Indicator

PART_RAW_BYTES = 1 << 20  # msgpack bytes per part before compression: ~1 MiB
_OVERHEAD = 24  # msgpack framing of one array-encoded indicator, roughly
_ZSTD_LEVEL = 3


def _size(item: Indicator | IndicatorKey) -> int:
    return len(item.value) + len(item.source) + _OVERHEAD


def split(delta: IntelDelta, part_bytes: int = PART_RAW_BYTES) -> list[IntelDelta]:
    """``delta`` as parts of about ``part_bytes`` each (at least one, even when empty)."""
    parts: list[IntelDelta] = []
    added: list[Indicator] = []
    removed: list[IndicatorKey] = []
    size = 0

    def cut() -> None:
        nonlocal added, removed, size
        parts.append(
            IntelDelta(
                base=delta.base, version=delta.version, full=delta.full,
                added=added, removed=removed,
            )
        )  # fmt: skip
        added, removed, size = [], [], 0

    for key in delta.removed:
        removed.append(key)
        size += _size(key)
        if size >= part_bytes:
            cut()
    for indicator in delta.added:
        added.append(indicator)
        size += _size(indicator)
        if size >= part_bytes:
            cut()
    if added or removed or not parts:
        cut()
    return parts


def pack(part: IntelDelta) -> str:
    """One part as the text an IntelPush carries."""
    compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(encode_delta(part))
    return base64.b64encode(compressed).decode("ascii")


def unpack(text: str) -> IntelDelta:
    """One part back from its text; DeltaError for anything that is not a valid one."""
    try:
        compressed = base64.b64decode(text, validate=True)
        raw = zstandard.ZstdDecompressor().decompress(compressed, max_output_size=MAX_DELTA_BYTES)
    except (binascii.Error, zstandard.ZstdError, ValueError) as exc:
        raise DeltaError(f"undecodable intel part: {exc}") from exc
    return decode_delta(raw)


def join(parts: Sequence[IntelDelta]) -> IntelDelta:
    """The delta the parts were cut from; DeltaError if they do not belong together."""
    if not parts:
        raise DeltaError("no parts to join")
    first = parts[0]
    for part in parts[1:]:
        if (part.base, part.version, part.full) != (first.base, first.version, first.full):
            raise DeltaError("intel parts of different deltas")
    return IntelDelta(
        base=first.base, version=first.version, full=first.full,
        added=[i for p in parts for i in p.added],
        removed=[k for p in parts for k in p.removed],
    )  # fmt: skip
