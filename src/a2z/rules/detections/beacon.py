"""Periodic beaconing: connections from one host to one service at a steady rhythm (T1071).

Implants check in with their controller on a timer; people and most software do not repeat
a connection at intervals this regular. We keep the start times of the last connections of
each (source, destination, port, protocol) and alert when enough of them arrive with a low
jitter (coefficient of variation of the gaps), as RITA's beacon analysis scores them.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from typing import ClassVar

from a2z.records import Alert, Conn, Record, Severity
from a2z.rules.detections.base import BoundedMap, DetectionInfo, DetectionStats, make_alert


@dataclass(frozen=True, slots=True)
class BeaconSettings:
    """Tunables of the beaconing detection (docs/detections.md)."""

    min_connections: int = 6  # connections needed before the rhythm is judged
    max_samples: int = 32  # start times kept per key (late records are sorted into them)
    max_jitter: float = 0.1  # coefficient of variation of the gaps (stdev / mean)
    min_interval_s: float = 0.5  # faster repeats are bursts or floods, not check-ins
    max_interval_s: float = 86_400.0  # slower ones are scheduled jobs
    protocols: tuple[str, ...] = ("tcp", "udp")  # ICMP pings are monitoring as often as not
    max_keys: int = 20_000  # (source, destination, port) keys tracked; least recent evicted


@dataclass(slots=True)
class _Series:
    times: list[float] = field(default_factory=list)  # sorted connection start times
    uids: list[str] = field(default_factory=list)  # uids matching ``times`` one to one


class Beaconing:
    """Low-jitter repetition of connections to one service."""

    info: ClassVar[DetectionInfo] = DetectionInfo(
        "a2z.net.beacon", "Periodic beaconing", Severity.MEDIUM, ("T1071", "T1573")
    )
    consumes: ClassVar[tuple[type[Record], ...]] = (Conn,)

    def __init__(self, settings: BeaconSettings | None = None) -> None:
        self.settings = settings or BeaconSettings()
        self.stats = DetectionStats()
        self._state: BoundedMap[tuple[str, str, int, str], _Series] = BoundedMap(
            self.settings.max_keys, self.stats
        )

    def observe(self, record: Record) -> list[Alert]:
        """Add a connection's start time to its series; judge the rhythm once long enough."""
        self.stats.records += 1
        s = self.settings
        if not isinstance(record, Conn) or record.proto not in s.protocols:
            return []
        key = (record.orig_h, record.resp_h, record.resp_p, record.proto)
        series = self._state.get(key, _Series)
        # Conn records come out when flows end, not in start order: keep the series sorted.
        i = bisect.bisect(series.times, record.ts)
        series.times.insert(i, record.ts)
        series.uids.insert(i, record.uid)
        if len(series.times) > s.max_samples:
            del series.times[0], series.uids[0]
        # Every connection that keeps the rhythm raises the alert again: suppression counts the
        # repeats, so the count tells how long the beacon went on.
        if len(series.times) < s.min_connections:
            return []
        # The latest ``min_connections`` only: a beacon that starts after other traffic to the
        # same service (a web server the implant hides behind) is judged on its own rhythm.
        times = series.times[-s.min_connections :]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        mean = sum(gaps) / len(gaps)
        if not s.min_interval_s <= mean <= s.max_interval_s:
            return []
        # Population stdev by hand: statistics.pstdev is exact (Fractions) and 50x slower.
        jitter = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
        if jitter > s.max_jitter:
            return []
        self.stats.alerts += 1
        msg = (
            f"{len(times)} connections to {record.resp_h}:{record.resp_p}/{record.proto} "
            f"every {mean:.2f} s (jitter {jitter:.3f})"
        )
        evidence = series.uids[-s.min_connections :]
        return [make_alert(self.info, record, msg=msg, key=key, uids=evidence)]
