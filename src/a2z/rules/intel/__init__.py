"""Threat-intelligence matching: indicator sets (global and per tenant), feeds, deltas, matcher.

Part of ``a2z.rules``: used by the agent (its tenant's set, kept current by deltas) and the
backend (global plus tenant sets). Imports nothing of ours but ``a2z.records``.
"""

from a2z.rules.intel.delta import (
    DeltaError,
    DeltaVersionError,
    IndicatorKey,
    IntelDelta,
    apply,
    decode_delta,
    diff,
    encode_delta,
    snapshot,
)
from a2z.rules.intel.feeds import (
    FEODO,
    RANSOMWARE_TRACKER,
    URLHAUS,
    CsvFormat,
    FeedError,
    FeedResult,
    parse_csv,
    parse_plain,
    parse_stix,
)
from a2z.rules.intel.indicators import (
    Indicator,
    IndicatorType,
    IntelError,
    InvalidIndicator,
    guess_type,
    make,
    normalise,
)
from a2z.rules.intel.matcher import IntelHit, IntelMatcher, IntelStats, alert_for
from a2z.rules.intel.store import IndicatorSet, WarningList

__all__ = [
    "FEODO",
    "RANSOMWARE_TRACKER",
    "URLHAUS",
    "CsvFormat",
    "DeltaError",
    "DeltaVersionError",
    "FeedError",
    "FeedResult",
    "Indicator",
    "IndicatorKey",
    "IndicatorSet",
    "IndicatorType",
    "IntelDelta",
    "IntelError",
    "IntelHit",
    "IntelMatcher",
    "IntelStats",
    "InvalidIndicator",
    "WarningList",
    "alert_for",
    "apply",
    "decode_delta",
    "diff",
    "encode_delta",
    "guess_type",
    "make",
    "normalise",
    "parse_csv",
    "parse_plain",
    "parse_stix",
    "snapshot",
]
