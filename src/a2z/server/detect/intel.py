"""The detect role's threat-intel matching: each tenant's records against the global and its
own indicators, minus the warning lists (a2z.rules.intel).

Sets are kept in memory and brought up to date by version: a tenant's (and the global) version
is read at most every ``refresh_s`` seconds, and a changed set takes only the rows changed
since (one indexed query), never a reload of the whole set. Edge agents match the same sets;
an alert the edge already raised (same dedup key, seen in the stream) is not raised again here
within ``edge_window_s``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from a2z.records import Alert, Conn, Dns, Http, Record, Ssl, Weird
from a2z.rules.intel import IndicatorSet, IntelMatcher, WarningList
from a2z.rules.intel.store import DEFAULT_BENIGN_CIDRS, DEFAULT_BENIGN_DOMAINS
from a2z.rules.suppress import Suppressor
from a2z.server.intel import service as intel
from a2z.server.intel.models import WarningKind
from a2z.server.metrics import ServerMetrics
from a2z.server.store.session import ScopedSession, SessionFactory

log = logging.getLogger(__name__)

INTEL_RECORDS = (Conn, Dns, Http, Ssl, Weird)


def warning_list(*listed: dict[WarningKind, list[str]]) -> WarningList:
    """The built-in benign values plus the given lists."""
    cidrs, domains, values = list(DEFAULT_BENIGN_CIDRS), list(DEFAULT_BENIGN_DOMAINS), []
    for entries in listed:
        cidrs += entries.get(WarningKind.CIDR, [])
        domains += entries.get(WarningKind.DOMAIN, [])
        values += entries.get(WarningKind.VALUE, [])
    return WarningList(cidrs, domains, values)


@dataclass
class _Owned:
    """One owner's set as loaded, at a version, with its warning list."""

    indicators: IndicatorSet = field(default_factory=IndicatorSet)
    warnings: dict[WarningKind, list[str]] = field(default_factory=dict)
    checked_at: float = float("-inf")
    floor: int = 0


@dataclass
class _Tenant:
    own: _Owned
    matcher: IntelMatcher
    global_version: int  # the global set version the matcher's warning list was built at
    edge_keys: OrderedDict[str, float] = field(default_factory=OrderedDict)  # key -> ts seen


class IntelDetector:
    """Global plus tenant indicators on every record of the tenant; alerts through suppression."""

    name = "intel"

    def __init__(
        self,
        sessions: SessionFactory,
        metrics: ServerMetrics,
        *,
        refresh_s: float = 10.0,
        max_tenants: int = 1_000,
        edge_window_s: float = 3600.0,
        max_edge_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._max_tenants = max_tenants
        self._edge_window_s = edge_window_s
        self._max_edge_keys = max_edge_keys
        self._clock = clock
        self._global = _Owned()
        self._tenants: OrderedDict[str, _Tenant] = OrderedDict()
        self.suppressor = Suppressor()  # one bounded table, keyed by tenant and dedup key
        self.refreshes = 0  # incremental loads done (for tests and the bench)

    def prepare(self) -> None:
        """Nothing to import ahead; sets load on a tenant's first batch."""

    def detect(self, tenant: str, records: Sequence[Record]) -> list[Alert]:
        """Alerts for the tenant's records that hold a live, not warning-listed indicator."""
        state = self._state(tenant)
        for record in records:  # what the edge already raised is not raised twice
            if isinstance(record, Alert) and record.rule_id.startswith("a2z-intel-"):
                self._seen_at_edge(state, record)
        alerts: list[Alert] = []
        for record in records:
            if not isinstance(record, INTEL_RECORDS):
                continue
            for alert in state.matcher.match(record):
                seen = state.edge_keys.get(alert.dedup_key)
                if seen is not None and abs(alert.ts - seen) < self._edge_window_s:
                    continue
                alerts.extend(self.suppressor.admit(alert, tenant))
        return alerts

    def _seen_at_edge(self, state: _Tenant, alert: Alert) -> None:
        state.edge_keys[alert.dedup_key] = alert.ts
        state.edge_keys.move_to_end(alert.dedup_key)
        while len(state.edge_keys) > self._max_edge_keys:
            state.edge_keys.popitem(last=False)

    def _state(self, tenant: str) -> _Tenant:
        now = self._clock()
        cached = self._tenants.get(tenant)
        if cached is not None:
            self._tenants.move_to_end(tenant)
            if now - cached.own.checked_at < self._refresh_s and (
                now - self._global.checked_at < self._refresh_s
            ):
                return cached
        with self._sessions.tenant(uuid.UUID(tenant)) as session:
            global_changed = self._refresh(session, intel.GLOBAL, self._global, now, "global")
            own = cached.own if cached is not None else _Owned()
            own_changed = self._refresh(session, intel.TENANT, own, now, "tenant")
        if (
            cached is not None
            and not own_changed
            and not global_changed
            and (cached.global_version == self._global.indicators.version)
        ):
            return cached
        matcher = IntelMatcher(
            [self._global.indicators, own.indicators],
            warning_list(self._global.warnings, own.warnings),
        )
        entry = _Tenant(
            own, matcher, self._global.indicators.version,
            cached.edge_keys if cached is not None else OrderedDict(),
        )  # fmt: skip
        self._tenants[tenant] = entry
        self._tenants.move_to_end(tenant)
        if len(self._tenants) > self._max_tenants:
            self._tenants.popitem(last=False)
        return entry

    def _refresh(
        self, session: ScopedSession, scope: intel.Scope[Any, Any], owned: _Owned, now: float,
        kind: str,
    ) -> bool:  # fmt: skip
        """Bring ``owned`` to the owner's version; True if it changed."""
        if now - owned.checked_at < self._refresh_s:
            return False
        owned.checked_at = now
        state = scope.state(session)
        have = owned.indicators.version
        if state.version == have:
            return False
        started = time.perf_counter()
        if have == 0 or have < state.floor or have > state.version:
            fresh = IndicatorSet(intel.snapshot(session, scope), version=state.version)
            owned.indicators = fresh
        else:
            added, removed = intel.changes(session, scope, have)
            target = owned.indicators
            for key in removed:
                target.remove(key.type, key.value, key.source)
            for indicator in added:
                target.add(indicator)
            target.version = state.version
        owned.warnings = intel.warning_values(session, scope)
        owned.floor = state.floor
        self.refreshes += 1
        self._metrics.intel_refresh_seconds.labels(kind).observe(time.perf_counter() - started)
        return True
