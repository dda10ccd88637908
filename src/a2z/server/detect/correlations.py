"""The detect role's correlation detector: each tenant's Sigma correlation rules over its stream.

A tenant's correlation rules are the correlation texts of its effective rule set (shipped ones
in ``rules/shipped/correlation/``, its overrides, its custom ones; ADR 13). Each tenant gets its
own ``Correlator`` (a2z.rules.correlation) with bounded state: at most ``max_groups`` open
groups per correlation, and at most ``max_tenants`` tenants (least recently seen dropped).
Time moves with the records' own timestamps, never the wall clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from a2z.records import Alert, Record
from a2z.rules.catalog import Catalog, is_correlation, ruleset_digest
from a2z.rules.correlation import (
    CorrelationSettings,
    CorrelationStats,
    Correlator,
    compile_correlations,
)
from a2z.server.detect.rule_cache import TenantRuleCache
from a2z.server.metrics import ServerMetrics
from a2z.server.rules.service import EffectiveRuleSet
from a2z.server.store.session import SessionFactory

log = logging.getLogger(__name__)

_DROPS = ("late", "future", "evicted")  # CorrelationStats counters exported as drops


@dataclass(frozen=True)
class _TenantCorrelations:
    fingerprint: str  # the texts the correlator was compiled from (see _compile)
    correlator: Correlator | None  # None: the tenant has no correlation rule that compiles


class CorrelationDetector:
    """Sigma correlation rules per tenant, refreshed like the tenant's Sigma rules.

    The effective set is looked up at most every ``refresh_s`` seconds. When it changed, the
    correlations are recompiled; the correlator (and its open windows) is replaced only when
    the correlation texts or the base rules they use changed, so an unrelated rule edit does
    not reset a scan half-way through its window.
    """

    name = "correlation"

    def __init__(
        self,
        sessions: SessionFactory,
        catalog: Catalog,
        metrics: ServerMetrics,
        *,
        settings: CorrelationSettings | None = None,
        refresh_s: float = 30.0,
        max_tenants: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._metrics = metrics
        self.settings = settings or CorrelationSettings()
        self._tenants = TenantRuleCache(
            sessions,
            catalog,
            self._compile,
            refresh_s=refresh_s,
            max_tenants=max_tenants,
            clock=clock,
        )

    def prepare(self) -> None:
        """Compile the shipped correlations once, so pySigma's import is paid at start."""
        compile_correlations((r.source, r.yaml) for r in self._catalog)

    def detect(self, tenant: str, records: Sequence[Record]) -> list[Alert]:
        """The correlation alerts ``records`` complete (alerts themselves are never inputs)."""
        correlator = self._tenants.get(tenant).correlator
        if correlator is None:
            return []
        stats = correlator.stats(tenant)
        before = [getattr(stats, reason) for reason in _DROPS]
        alerts: list[Alert] = []
        for record in records:
            if not isinstance(record, Alert):
                alerts.extend(correlator.process(tenant, record))
        stats = correlator.stats(tenant)  # the same object, unless this was the tenant's first
        for reason, was in zip(_DROPS, before, strict=True):
            if (now := getattr(stats, reason)) > was:
                self._metrics.detect_correlation_dropped.labels(reason).inc(now - was)
        return alerts

    def stats(self, tenant: str) -> CorrelationStats:
        """The tenant's correlation counters (zeros if it has no correlator)."""
        entry = self._tenants.peek(tenant)
        if entry is None or entry.correlator is None:
            return CorrelationStats()
        return entry.correlator.stats(tenant)

    @property
    def tenants(self) -> int:
        """Tenants whose correlation state is held now (at most ``max_tenants``)."""
        return len(self._tenants)

    def open_groups(self, tenant: str) -> int:
        """Open correlation groups the tenant holds now."""
        entry = self._tenants.peek(tenant)
        if entry is None or entry.correlator is None:
            return 0
        return entry.correlator.open_groups(tenant)

    def _compile(
        self, tenant: str, effective: EffectiveRuleSet, cached: _TenantCorrelations | None
    ) -> _TenantCorrelations:
        correlations = [r for r in effective.rules if is_correlation(r.yaml)]
        if not correlations:
            return _TenantCorrelations("", None)
        # Correlation texts first: a base rule bundled in a correlation's text is found before
        # a rule of the effective set with the same name.
        sources = [(r.rule_id, r.yaml) for r in correlations]
        sources += [(r.rule_id, r.yaml) for r in effective.rules if not is_correlation(r.yaml)]
        load = compile_correlations(sources)
        for error in load.errors:
            self._metrics.detect_rules_skipped.inc()
            log.warning("tenant %s: correlation rule does not compile: %s", tenant, error)
        texts = dict(sources)
        used = [(key, texts[key]) for key in load.rules.base_rules if key in texts]
        fingerprint = ruleset_digest([*((r.rule_id, r.yaml) for r in correlations), *used])
        if cached is not None and cached.fingerprint == fingerprint:
            return _TenantCorrelations(fingerprint, cached.correlator)
        if not len(load.rules):
            return _TenantCorrelations(fingerprint, None)
        correlator = Correlator(load.rules, self.settings)
        return _TenantCorrelations(fingerprint, correlator)
