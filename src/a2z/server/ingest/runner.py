"""The ingest role: the bus's ``ingest`` group writing through IngestWorker, in-process or alone.

``run_ingest`` is the headless worker process (``a2z server --role ingest``): it consumes the
JetStream stream until SIGINT/SIGTERM, then drains, and serves only ``/metrics``. It also runs
the event-store upkeep (partitions ahead, retention), as API processes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import start_http_server

from a2z.server.bus import Bus, open_bus
from a2z.server.bus.jetstream import EVENTS_PREFIX
from a2z.server.config import Settings
from a2z.server.events.maintenance import open_maintenance
from a2z.server.ingest.worker import IngestWorker
from a2z.server.metrics import ServerMetrics
from a2z.server.quotas.service import Quotas
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory

log = logging.getLogger(__name__)

INGEST_GROUP = "ingest"  # the durable consumer every ingest process shares


def wire_ingest(
    bus: Bus, sessions: SessionFactory, metrics: ServerMetrics, quotas: Quotas | None = None
) -> None:
    """Subscribe the ingest worker to every tenant's event batches."""
    worker = IngestWorker(sessions, metrics, quotas)
    bus.subscribe(EVENTS_PREFIX, worker.handle, group=INGEST_GROUP)


async def serve_ingest(settings: Settings, stop: asyncio.Event) -> None:
    """Consume and store until ``stop`` is set, then let the batches in hand finish."""
    if settings.bus_url is None:
        raise ValueError("a separate ingest process needs the JetStream bus (bus_url)")
    engine = open_store(
        settings.database_url, app_role=settings.app_role, pool_size=settings.pool_size
    )
    metrics = ServerMetrics()
    sessions = SessionFactory(engine)
    maintenance = open_maintenance(settings, sessions, metrics)
    # Partitions before the first batch; retention waits for the first interval, so a worker
    # restarting in a loop never runs deletes (and does not slow its own start with them).
    await asyncio.to_thread(maintenance.ensure_partitions)
    bus = open_bus(settings, metrics)
    wire_ingest(bus, sessions, metrics, Quotas(sessions, metrics, settings.quota_refresh_s))
    server, thread = start_http_server(settings.port, addr=settings.host, registry=metrics.registry)
    upkeep = asyncio.create_task(maintenance.run_every(settings.maintenance_interval_s))
    try:
        await bus.start()
        log.info(
            "ingest worker consuming %s; metrics on %s:%d",
            settings.bus_url, settings.host, server.server_port,
        )  # fmt: skip
        await stop.wait()
        log.info("ingest worker draining")
    finally:
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep
        await bus.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        engine.dispose()


def run_ingest(settings: Settings) -> int:
    """Run a headless ingest worker until SIGINT or SIGTERM; returns the exit status."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_ingest(settings, stop)

    asyncio.run(main())
    return 0
