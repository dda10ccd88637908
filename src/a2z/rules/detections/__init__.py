"""Built-in network detections: stateful, bounded, one module per family (docs/detections.md).

``builtin_detections()`` makes a fresh set with default tunables; pass settings to change
them. Each detection consumes some record types and returns :class:`~a2z.records.Alert`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from a2z.rules.detections.base import (
    BoundedMap,
    Detection,
    DetectionInfo,
    DetectionStats,
    make_alert,
)
from a2z.rules.detections.beacon import Beaconing, BeaconSettings
from a2z.rules.detections.cleartext import CleartextCredentials, CleartextSettings
from a2z.rules.detections.dns import DgaLookups, DgaSettings, DnsTunnel, TunnelSettings
from a2z.rules.detections.flood import SynFlood, SynFloodSettings
from a2z.rules.detections.scan import HorizontalScan, IcmpSweep, ScanSettings, VerticalScan
from a2z.rules.detections.web import (
    PathTraversal,
    ScannerSettings,
    ScannerUserAgent,
    TraversalSettings,
)


@dataclass(frozen=True, slots=True)
class BuiltinSettings:
    """Every built-in detection's tunables, and which detections are off."""

    scan: ScanSettings = field(default_factory=ScanSettings)
    synflood: SynFloodSettings = field(default_factory=SynFloodSettings)
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)
    dga: DgaSettings = field(default_factory=DgaSettings)
    beacon: BeaconSettings = field(default_factory=BeaconSettings)
    cleartext: CleartextSettings = field(default_factory=CleartextSettings)
    scanner: ScannerSettings = field(default_factory=ScannerSettings)
    traversal: TraversalSettings = field(default_factory=TraversalSettings)
    disabled: frozenset[str] = frozenset()  # rule ids to leave out


def builtin_detections(settings: BuiltinSettings | None = None) -> list[Detection]:
    """A fresh instance of every enabled built-in detection (each keeps its own state)."""
    s = settings or BuiltinSettings()
    every: list[Detection] = [
        VerticalScan(s.scan),
        HorizontalScan(s.scan),
        IcmpSweep(s.scan),
        SynFlood(s.synflood),
        DnsTunnel(s.tunnel),
        DgaLookups(s.dga),
        Beaconing(s.beacon),
        CleartextCredentials(s.cleartext),
        ScannerUserAgent(s.scanner),
        PathTraversal(s.traversal),
    ]
    return [d for d in every if d.info.rule_id not in s.disabled]


BUILTIN_RULE_IDS = tuple(d.info.rule_id for d in builtin_detections())
"""The ids of all built-in detections, in a stable order."""

__all__ = [
    "BUILTIN_RULE_IDS",
    "BoundedMap",
    "BuiltinSettings",
    "Detection",
    "DetectionInfo",
    "DetectionStats",
    "builtin_detections",
    "make_alert",
]
