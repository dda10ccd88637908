"""Wiring of the detect role onto the bus (in the embedded server or a headless worker)."""

from __future__ import annotations

from a2z.server.bus import Bus
from a2z.server.bus.jetstream import EVENTS_PREFIX
from a2z.server.detect.detectors import BatchDetector, ConnAnomalyDetector
from a2z.server.detect.worker import DetectWorker
from a2z.server.metrics import ServerMetrics
from a2z.server.store.session import SessionFactory

DETECT_GROUP = "detect"  # the durable consumer every detect process shares


def default_detectors() -> list[BatchDetector]:
    """The backend detections every tenant gets."""
    return [ConnAnomalyDetector()]


def wire_detect(
    bus: Bus,
    sessions: SessionFactory,
    metrics: ServerMetrics,
    detectors: list[BatchDetector] | None = None,
) -> DetectWorker:
    """Subscribe a detect worker to every tenant's event batches; returns it (close it last)."""
    worker = DetectWorker(sessions, metrics, detectors or default_detectors())
    bus.subscribe(EVENTS_PREFIX, worker.handle, group=DETECT_GROUP)
    return worker
