"""Suppression windows: one alert per (tenant, dedup key) per window, repeats counted.

The first alert for a key passes and opens a window of the rule's length; repeats inside it
are counted, not emitted. When the window closes (a later alert for the key, time passing,
the key's eviction, or the end of the stream) and repeats were counted, one summary alert goes
out: the last repeat with ``count`` set to the number of repeats. So a noisy source costs the
tenant one alert and one summary per window, and nothing is lost from the count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from a2z.records import Alert

MAX_SUMMARY_UIDS = 10  # evidence uids carried by a summary alert


@dataclass(frozen=True, slots=True)
class SuppressionSettings:
    """Window lengths (seconds of record time) by rule and tenant; 0 turns suppression off."""

    window_s: float = 300.0  # the default window
    rules: Mapping[str, float] = field(default_factory=dict)  # rule id -> window
    tenants: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """tenant -> (rule id or ``*`` -> window): a tenant's choice wins over the rule's."""
    max_keys: int = 50_000  # open windows at once; the least recently used closes first

    def window_for(self, tenant: str, rule_id: str) -> float:
        """The window that applies to one tenant's alerts of one rule."""
        mine = self.tenants.get(tenant)
        if mine is not None:
            if rule_id in mine:
                return mine[rule_id]
            if "*" in mine:
                return mine["*"]
        return self.rules.get(rule_id, self.window_s)


@dataclass(slots=True)
class _Open:
    """One open window."""

    end: float  # record time at which it closes
    repeats: int = 0  # alerts counted, not emitted
    last: Alert | None = None  # the latest repeat (the summary is made from it)
    uids: list[str] = field(default_factory=list)  # evidence of the repeats, capped


@dataclass(slots=True)
class SuppressionStats:
    """What suppression did; exported as metrics by the stage that owns it."""

    passed: int = 0  # alerts emitted as they came (first of their window)
    suppressed: int = 0  # alerts counted into a window
    summaries: int = 0  # summary alerts emitted at window close
    evictions: int = 0  # windows closed early because the table was full


class Suppressor:
    """Bounded suppression state for any number of tenants; not thread-safe (one per stage)."""

    def __init__(self, settings: SuppressionSettings | None = None) -> None:
        self.settings = settings or SuppressionSettings()
        self.stats = SuppressionStats()
        self._open: OrderedDict[tuple[str, str], _Open] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, alert: Alert, tenant: str = "") -> list[Alert]:
        """The alerts to emit now for ``alert``: itself, nothing, or a summary then itself."""
        window = self.settings.window_for(tenant, alert.rule_id)
        if window <= 0:
            self.stats.passed += 1
            return [alert]
        key = (tenant, alert.dedup_key or f"{alert.rule_id}|{alert.uid}")
        out: list[Alert] = []
        state = self._open.get(key)
        if state is not None and alert.ts < state.end:
            state.repeats += 1
            state.last = alert
            for uid in alert.uids:
                if len(state.uids) >= MAX_SUMMARY_UIDS:
                    break
                if uid not in state.uids:
                    state.uids.append(uid)
            self._open.move_to_end(key)
            self.stats.suppressed += 1
            return out
        if state is not None:  # the window is over: report it, then open a new one
            del self._open[key]
            out.extend(self._summary(state))
        self._open[key] = _Open(end=alert.ts + window)
        self.stats.passed += 1
        out.append(alert)
        if len(self._open) > self.settings.max_keys:
            _key, oldest = self._open.popitem(last=False)
            self.stats.evictions += 1
            out.extend(self._summary(oldest))
        return out

    def expire(self, now: float) -> list[Alert]:
        """Close the windows that ended by ``now`` (record time); return their summaries."""
        out: list[Alert] = []
        ended = [key for key, state in self._open.items() if state.end <= now]
        for key in ended:
            out.extend(self._summary(self._open.pop(key)))
        return out

    def flush(self) -> list[Alert]:
        """Close every window (end of the stream); return the summaries of those with repeats."""
        out: list[Alert] = []
        for state in self._open.values():
            out.extend(self._summary(state))
        self._open.clear()
        return out

    def _summary(self, state: _Open) -> list[Alert]:
        last = state.last
        if last is None or state.repeats == 0:
            return []
        self.stats.summaries += 1
        note = f"{state.repeats} repeats suppressed in the window"
        return [
            msgspec.structs.replace(
                last,
                count=state.repeats,
                uids=state.uids or last.uids,
                msg=f"{last.msg}; {note}" if last.msg else note,
            )
        ]
