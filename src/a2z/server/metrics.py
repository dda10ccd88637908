"""Prometheus metrics of the server, one registry per app so tests stay independent."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter


@dataclass
class ServerMetrics:
    """Counters every stage updates; exposed at ``/metrics``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.batches = Counter("a2z_ingest_batches", "Batches received from agents", registry=r)
        self.events_stored = Counter("a2z_events_stored", "Event rows written", registry=r)
        self.events_duplicate = Counter(
            "a2z_events_duplicate", "Re-sent events collapsed onto stored rows", registry=r
        )
        self.wire_errors = Counter(
            "a2z_wire_errors", "Agent frames refused as invalid", ["reason"], registry=r
        )
        self.auth_failures = Counter(
            "a2z_auth_failures", "Refused credentials", ["channel"], registry=r
        )
