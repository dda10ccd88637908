"""What the detect role runs on each batch: small detectors behind one protocol.

Each detector sees one tenant's records at a time and keeps its state per tenant, so one
tenant's traffic never shapes another's alerts.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from a2z.records import Alert, Conn, Dns, Record
from a2z.rules import RuleError, RuleSet, compile_yaml
from a2z.rules.anomaly import AnomalySettings, TenantModels, load_library
from a2z.rules.catalog import Catalog, is_correlation
from a2z.server.detect.rule_cache import TenantRuleCache
from a2z.server.detect.thresholds import TenantThresholds
from a2z.server.events import scores
from a2z.server.metrics import ServerMetrics
from a2z.server.rules.service import EffectiveRuleSet
from a2z.server.store.session import SessionFactory

log = logging.getLogger(__name__)


class BatchDetector(Protocol):
    """A backend detection: records of one tenant in, alerts out (state kept per tenant)."""

    name: str

    def prepare(self) -> None:
        """Load what detection needs (may be slow); runs on the detection thread at start."""
        ...

    def detect(self, tenant: str, records: Sequence[Record]) -> list[Alert]:
        """The alerts these records raise for ``tenant``."""
        ...


class ConnAnomalyDetector:
    """The per-tenant online anomaly model (a2z.rules.anomaly) over ``conn`` and ``dns`` records.

    With ``sessions`` it stores every scored connection's score (``events.scores``, one
    statement per batch) and reads each tenant's own threshold (``TenantThresholds``).
    """

    name = "anomaly"

    def __init__(
        self,
        settings: AnomalySettings | None = None,
        max_tenants: int = 1_000,
        *,
        sessions: SessionFactory | None = None,
        thresholds: TenantThresholds | None = None,
    ) -> None:
        self.models = TenantModels(settings or AnomalySettings(), max_tenants=max_tenants)
        self.scored = 0
        self._sessions = sessions
        if thresholds is None and sessions is not None:
            thresholds = TenantThresholds(sessions)
        self._thresholds = thresholds

    def prepare(self) -> None:
        """Import the model library in the background rather than on the first batch."""
        load_library()

    def detect(self, tenant: str, records: Sequence[Record]) -> list[Alert]:
        """Score each connection on its source's window; store the scores; alert on those at
        or above the tenant's threshold (one alert per source per window)."""
        if not any(isinstance(rec, (Conn, Dns)) for rec in records):
            return []
        threshold = self._thresholds.of(tenant) if self._thresholds is not None else None
        model = self.models.model(tenant)
        alerts = []
        scored = self.models.observe(tenant, records, threshold)
        for conn, score in scored:
            alert = model.alert(conn, score, threshold)
            if alert is not None:
                alerts.append(alert)
        self.scored += len(scored)
        if scored and self._sessions is not None:
            rows = [(conn.uid, conn.ts, round(score, 4)) for conn, score in scored]
            with self._sessions.tenant(uuid.UUID(tenant)) as session:
                scores.store(session=session, scores=rows)
        return alerts


class TenantRulesDetector:
    """Each tenant's effective Sigma rules (shipped, the tenant's overrides, its custom rules;
    ``GET /api/v1/rules/effective``) on every record of that tenant.

    A tenant's set is looked up at most every ``refresh_s`` seconds and recompiled only when its
    digest changed, so an edit through the API takes effect within ``refresh_s``. A rule that no
    longer compiles (e.g. after a product upgrade) is skipped and counted; the others run.
    """

    name = "sigma"

    def __init__(
        self,
        sessions: SessionFactory,
        catalog: Catalog,
        metrics: ServerMetrics,
        *,
        refresh_s: float = 30.0,
        max_tenants: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._metrics = metrics
        self._rules = TenantRuleCache(
            sessions,
            catalog,
            self._compile,
            refresh_s=refresh_s,
            max_tenants=max_tenants,
            clock=clock,
        )

    def prepare(self) -> None:
        """Compile one shipped rule, so pySigma's import is paid before the first batch."""
        for shipped in self._catalog:
            if not is_correlation(shipped.yaml):
                compile_yaml(shipped.yaml)
                break

    def detect(self, tenant: str, records: Sequence[Record]) -> list[Alert]:
        """Alerts of the tenant's rules on ``records`` (alerts themselves are never inputs).

        An agent that runs the tenant's rules at the edge (ADR 13) ships its alert right after
        the record that raised it; a rule and record the batch already has an alert for are
        not alerted on twice.
        """
        rules = self._rules.get(tenant)
        alerts: list[Alert] = []
        edge: set[tuple[str, str]] = set()
        for record in records:
            if isinstance(record, Alert):
                edge.update((record.rule_id, uid) for uid in record.uids)
            else:
                alerts.extend(rules.match(record))
        if edge:
            alerts = [a for a in alerts if (a.rule_id, a.uid) not in edge]
        return alerts

    def _compile(self, tenant: str, effective: EffectiveRuleSet, _old: RuleSet | None) -> RuleSet:
        compiled = []
        for rule in effective.rules:
            if is_correlation(rule.yaml):
                continue  # the CorrelationDetector's
            try:
                compiled.append(compile_yaml(rule.yaml))
            except RuleError as exc:
                self._metrics.detect_rules_skipped.inc()
                log.warning("tenant %s: rule %s does not compile: %s", tenant, rule.rule_id, exc)
        return RuleSet(compiled)
