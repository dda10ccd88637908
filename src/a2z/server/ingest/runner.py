"""The ingest role: the bus's ``ingest`` group writing through IngestWorker.

The embedded server wires it in-process (``a2z.server.app``); ``a2z server --role ingest`` runs
it headless (``a2z.server.workers``).
"""

from __future__ import annotations

from a2z.server.bus import Bus
from a2z.server.bus.jetstream import EVENTS_PREFIX
from a2z.server.ingest.worker import IngestWorker
from a2z.server.metrics import ServerMetrics
from a2z.server.quotas.service import Quotas
from a2z.server.store.session import SessionFactory

INGEST_GROUP = "ingest"  # the durable consumer every ingest process shares


def wire_ingest(
    bus: Bus, sessions: SessionFactory, metrics: ServerMetrics, quotas: Quotas | None = None
) -> None:
    """Subscribe the ingest worker to every tenant's event batches."""
    worker = IngestWorker(sessions, metrics, quotas)
    bus.subscribe(EVENTS_PREFIX, worker.handle, group=INGEST_GROUP, in_flight=worker.in_flight)
