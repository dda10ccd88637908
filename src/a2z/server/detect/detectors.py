"""What the detect role runs on each batch: small detectors behind one protocol.

Each detector sees one tenant's records at a time and keeps its state per tenant, so one
tenant's traffic never shapes another's alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from a2z.records import Alert, Conn, Record
from a2z.rules.anomaly import AnomalySettings, TenantModels, load_library


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
    """The per-tenant online anomaly model (a2z.rules.anomaly) over ``conn`` records."""

    name = "anomaly"

    def __init__(self, settings: AnomalySettings | None = None, max_tenants: int = 1_000) -> None:
        self.models = TenantModels(settings or AnomalySettings(), max_tenants=max_tenants)
        self.scored = 0

    def prepare(self) -> None:
        """Import the model library in the background rather than on the first batch."""
        load_library()

    def detect(self, tenant: str, records: Sequence[Record]) -> list[Alert]:
        """Score then learn each connection; alert on the scores at or above the threshold."""
        conns = [rec for rec in records if isinstance(rec, Conn)]
        if not conns:
            return []
        model = self.models.model(tenant)
        alerts = []
        for conn, score in self.models.observe(tenant, conns):
            self.scored += 1
            alert = model.alert(conn, score)
            if alert is not None:
                alerts.append(alert)
        return alerts
