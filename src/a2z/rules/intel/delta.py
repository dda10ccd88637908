"""Indicator-set deltas: what the backend sends an agent so its set follows the tenant's.

A delta takes a set from version ``base`` to ``version`` (added and removed indicators); a
``full`` delta replaces the whole set (first contact, or an agent too far behind). Encoded as
msgpack with msgspec; ``schema`` versions the format itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from a2z.rules.intel.indicators import (
    Indicator,
    IndicatorType,
    IntelError,
    InvalidIndicator,
    normalise,
)
from a2z.rules.intel.store import IndicatorSet

SCHEMA = 1
MAX_DELTA_BYTES = 64 * 1024 * 1024  # a full set of ~1M indicators fits; bigger is refused


class DeltaError(IntelError):
    """A delta that cannot be decoded or applied."""


class DeltaVersionError(DeltaError):
    """A delta for another version than the set has: the sender must send a full one."""

    def __init__(self, have: int, base: int) -> None:
        self.have = have  # the set's version
        self.base = base  # the version the delta applies to
        super().__init__(f"delta applies to version {base}, the set is at version {have}")


class IndicatorKey(msgspec.Struct, frozen=True, array_like=True):
    """An indicator's identity, enough to remove it."""

    type: IndicatorType
    value: str
    source: str


class IntelDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    """Changes taking an indicator set from version ``base`` to ``version``."""

    base: int  # the version this applies to (ignored when full)
    version: int  # the version after applying
    full: bool = False  # replace the whole set with ``added``
    added: list[Indicator] = []  # new or changed (same identity replaces)
    removed: list[IndicatorKey] = []
    schema: int = SCHEMA  # format version of the delta itself


def diff(
    old: Iterable[Indicator], new: Iterable[Indicator], *, base: int, version: int
) -> IntelDelta:
    """The delta from ``old`` (at ``base``) to ``new`` (at ``version``)."""
    before = {i.key: i for i in old}
    after = {i.key: i for i in new}
    added = [i for k, i in after.items() if before.get(k) != i]
    removed = [IndicatorKey(*k) for k in before if k not in after]
    return IntelDelta(base=base, version=version, added=added, removed=removed)


def snapshot(indicators: IndicatorSet) -> IntelDelta:
    """A full delta: the whole set at its version."""
    return IntelDelta(base=0, version=indicators.version, full=True, added=list(indicators))


def apply(indicators: IndicatorSet, delta: IntelDelta) -> None:
    """Apply ``delta`` in place; DeltaVersionError (set unchanged) if it is for another version."""
    if delta.schema != SCHEMA:
        raise DeltaError(f"delta schema {delta.schema} is not {SCHEMA}")
    if delta.full:
        indicators.clear()
    elif delta.base != indicators.version:
        raise DeltaVersionError(indicators.version, delta.base)
    for key in delta.removed:
        indicators.remove(key.type, key.value, key.source)
    for indicator in delta.added:
        indicators.add(indicator)
    indicators.version = delta.version


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(IntelDelta)


def encode_delta(delta: IntelDelta) -> bytes:
    return _ENCODER.encode(delta)


def decode_delta(data: bytes) -> IntelDelta:
    """Decode and check a delta; DeltaError for anything that is not a valid one."""
    if len(data) > MAX_DELTA_BYTES:
        raise DeltaError(f"delta of {len(data)} bytes exceeds {MAX_DELTA_BYTES}")
    try:
        delta = _DECODER.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise DeltaError(f"invalid delta: {exc}") from exc
    for indicator in delta.added:  # a value not in normal form would never match, or crash
        try:
            normal = normalise(indicator.type, indicator.value)
        except InvalidIndicator as exc:
            raise DeltaError(f"invalid indicator in delta: {exc}") from exc
        if normal != indicator.value:
            raise DeltaError(f"indicator not in normal form: {indicator.value!r}")
        if not 0 <= indicator.confidence <= 100:
            raise DeltaError(f"confidence {indicator.confidence} is not 0-100")
    return delta
