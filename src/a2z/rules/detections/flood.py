"""SYN flood: many half-open TCP connections to one service per second (ATT&CK T1498).

A half-open connection is one whose originator sent a SYN and never acknowledged anything
(Zeek history with ``S`` and without ``A``): spoofed or scripted floods (hping3 -S) leave only
these. The key is the destination *service* (address and port), so a fast SYN scan, which
touches each port once, is left to the scan detections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from a2z.records import Alert, Conn, Record, Severity
from a2z.rules.detections.base import BoundedMap, DetectionInfo, DetectionStats, Window, make_alert


def half_open(conn: Conn) -> bool:
    """The originator sent a SYN but never completed the handshake."""
    history = conn.history
    return conn.proto == "tcp" and "S" in history and "A" not in history and "D" not in history


@dataclass(frozen=True, slots=True)
class SynFloodSettings:
    """Tunables of the SYN flood detection (docs/detections.md)."""

    window_s: float = 1.0  # counting window: the rate is per this many seconds
    threshold: int = 200  # half-open connections to one service within the window
    max_keys: int = 10_000  # destination services tracked at once; least recent evicted


@dataclass(slots=True)
class _Rate(Window):
    count: int = 0  # half-open connections in the window


class SynFlood:
    """Half-open connections per destination service and second."""

    info: ClassVar[DetectionInfo] = DetectionInfo(
        "a2z.net.synflood", "TCP SYN flood", Severity.HIGH, ("T1498", "T1499")
    )
    consumes: ClassVar[tuple[type[Record], ...]] = (Conn,)

    def __init__(self, settings: SynFloodSettings | None = None) -> None:
        self.settings = settings or SynFloodSettings()
        self.stats = DetectionStats()
        self._state: BoundedMap[tuple[str, int], _Rate] = BoundedMap(
            self.settings.max_keys, self.stats
        )

    def observe(self, record: Record) -> list[Alert]:
        """Count a half-open connection towards its destination service's window."""
        self.stats.records += 1
        if not isinstance(record, Conn) or not half_open(record):
            return []
        ts = record.ts
        key = (record.resp_h, record.resp_p)
        state = self._state.get(key, lambda: _Rate(start=ts))
        if ts - state.start > self.settings.window_s:
            state.start, state.fired, state.count = ts, False, 0
            state.uids.clear()
        state.count += 1
        if state.fired:
            return []
        state.add_uid(record.uid)
        if state.count < self.settings.threshold:
            return []
        state.fired = True
        self.stats.alerts += 1
        msg = (
            f"{state.count} half-open connections to {record.resp_h}:{record.resp_p} "
            f"within {self.settings.window_s:g} s"
        )
        return [make_alert(self.info, record, msg=msg, key=key, uids=state.uids)]
