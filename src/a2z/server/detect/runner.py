"""Wiring of the detect role onto the bus (in the embedded server or a headless worker)."""

from __future__ import annotations

from a2z.rules.catalog import Catalog, shipped_catalog
from a2z.server.bus import Bus
from a2z.server.bus.jetstream import EVENTS_PREFIX
from a2z.server.detect.correlations import CorrelationDetector
from a2z.server.detect.detectors import BatchDetector, ConnAnomalyDetector, TenantRulesDetector
from a2z.server.detect.worker import DetectWorker
from a2z.server.metrics import ServerMetrics
from a2z.server.store.session import SessionFactory

DETECT_GROUP = "detect"  # the durable consumer every detect process shares


def default_detectors(
    sessions: SessionFactory, metrics: ServerMetrics, catalog: Catalog
) -> list[BatchDetector]:
    """The backend detections every tenant gets: its Sigma rules, its Sigma correlation rules
    and the anomaly model."""
    return [
        TenantRulesDetector(sessions, catalog, metrics),
        CorrelationDetector(sessions, catalog, metrics),
        ConnAnomalyDetector(sessions=sessions),
    ]


def wire_detect(
    bus: Bus,
    sessions: SessionFactory,
    metrics: ServerMetrics,
    detectors: list[BatchDetector] | None = None,
    catalog: Catalog | None = None,
) -> DetectWorker:
    """Subscribe a detect worker to every tenant's event batches; returns it (close it last)."""
    if detectors is None:
        detectors = default_detectors(sessions, metrics, catalog or shipped_catalog())
    worker = DetectWorker(sessions, metrics, detectors)
    bus.subscribe(EVENTS_PREFIX, worker.handle, group=DETECT_GROUP)
    return worker
