"""The alert record: a detection's verdict about one or more evidence records."""

from __future__ import annotations

import enum

from a2z.records.base import RecordBase


class Severity(enum.StrEnum):
    """How urgently a person should look; ordered low to critical."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Alert(RecordBase, tag="alert", frozen=True, kw_only=True):
    """A detection result (ours, not Zeek's); ``id.*`` is the primary evidence flow."""

    rule_id: str  # stable id of the rule that fired
    title: str  # one-line human summary
    severity: Severity  # low, medium, high, critical
    attack: list[str] = []  # ATT&CK technique ids, e.g. T1046
    uids: list[str] = []  # uids of the evidence records
    dedup_key: str = ""  # alerts with the same key within a window are counted, not repeated
    score: float | None = None  # the detector's score where it has one (anomaly model: 0..1)
    msg: str | None = None  # what the detection saw, e.g. "1022 ports of 10.66.0.20 in 0.4 s"
    count: int = 1  # occurrences reported: 1, or the repeats a suppression window counted
