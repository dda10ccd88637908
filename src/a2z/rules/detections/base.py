"""What every built-in detection shares: its identity, bounded per-key state, alert building.

A detection is a small stateful object: ``observe(record)`` returns the alerts that record
completes (usually none). Its state is keyed (by source, by destination, ...) in a
:class:`BoundedMap`, so memory stays capped however many keys the traffic brings.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar

from a2z.records import Alert, Record, Severity

K = TypeVar("K")
V = TypeVar("V")

MAX_EVIDENCE = 10  # uids kept per alert: enough to pivot to the records, small on the wire


@dataclass(frozen=True, slots=True)
class DetectionInfo:
    """A detection's identity, as its alerts carry it and docs/detections.md lists it."""

    rule_id: str  # stable id, e.g. a2z.net.scan.vertical
    title: str  # one-line summary used as the alert title
    severity: Severity
    attack: tuple[str, ...]  # ATT&CK technique ids


@dataclass(slots=True)
class DetectionStats:
    """Counters of one detection: what it looked at, raised, and had to forget."""

    records: int = 0  # records observed
    alerts: int = 0  # alerts raised (before suppression)
    evictions: int = 0  # keys dropped from full state tables (least recently used first)


class Detection(Protocol):
    """A built-in detection: consumes some record types, returns alerts."""

    info: ClassVar[DetectionInfo]
    consumes: ClassVar[tuple[type[Record], ...]]  # the record types ``observe`` wants
    stats: DetectionStats

    def observe(self, record: Record) -> list[Alert]:
        """Update state with one record; return the alerts it completes."""
        ...


class BoundedMap(Generic[K, V]):
    """A dict capped at ``max_keys``: the least recently used key goes first, and is counted.

    Detections keep one entry per source or destination; an attacker who sprays addresses can
    only push out old entries, never grow memory.
    """

    __slots__ = ("_data", "_stats", "max_keys")

    def __init__(self, max_keys: int, stats: DetectionStats) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self.max_keys = max_keys
        self._data: OrderedDict[K, V] = OrderedDict()
        self._stats = stats

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The entry for ``key`` (made if new), marked as most recently used."""
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
            return value
        value = data[key] = make()
        if len(data) > self.max_keys:
            data.popitem(last=False)
            self._stats.evictions += 1
        return value

    def pop(self, key: K) -> V | None:
        """Remove and return the entry for ``key``, if any."""
        return self._data.pop(key, None)


@dataclass(slots=True)
class Window:
    """Per-key state over one time window: when it started and the evidence gathered."""

    start: float
    uids: list[str] = field(default_factory=list)
    fired: bool = False  # the alert for this window has been raised

    def add_uid(self, uid: str) -> None:
        """Keep the first few evidence uids (the rest are counted by the detection)."""
        if len(self.uids) < MAX_EVIDENCE and uid not in self.uids:
            self.uids.append(uid)


def make_alert(
    info: DetectionInfo,
    record: Record,
    *,
    msg: str,
    key: Iterable[object],
    uids: Iterable[str] = (),
) -> Alert:
    """The alert of ``info`` about ``record`` (its endpoints and time are the alert's)."""
    evidence = list(uids) or [record.uid]
    return Alert(
        ts=record.ts,
        uid=record.uid,
        orig_h=record.orig_h,
        orig_p=record.orig_p,
        resp_h=record.resp_h,
        resp_p=record.resp_p,
        rule_id=info.rule_id,
        title=info.title,
        severity=info.severity,
        attack=list(info.attack),
        uids=evidence[:MAX_EVIDENCE],
        dedup_key="|".join([info.rule_id, *(str(k) for k in key)]),
        msg=msg,
    )
