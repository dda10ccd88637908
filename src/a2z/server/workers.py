"""Headless worker processes: the bus-consuming roles (ingest, detect) without the API.

``a2z server --role ingest`` / ``--role detect`` (or both) run ``run_workers``: consume the
JetStream stream until SIGINT/SIGTERM, then drain, serving only ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import start_http_server

from a2z.server.bus import open_bus
from a2z.server.config import ServerRole, Settings
from a2z.server.detect.runner import wire_detect
from a2z.server.events.maintenance import open_maintenance
from a2z.server.ingest.runner import wire_ingest
from a2z.server.metrics import ServerMetrics
from a2z.server.page_cache import PageGenerations
from a2z.server.quotas.service import Quotas
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory

log = logging.getLogger(__name__)

WORKER_ROLES = frozenset({ServerRole.INGEST, ServerRole.DETECT})


async def serve_workers(settings: Settings, stop: asyncio.Event) -> None:
    """Consume with the worker roles in ``settings.roles`` until ``stop``, then drain."""
    if settings.bus_url is None:
        raise ValueError("a separate worker process needs the JetStream bus (bus_url)")
    roles = settings.roles & WORKER_ROLES
    if not roles or settings.roles - WORKER_ROLES:  # the api and gateway roles serve clients
        raise ValueError(f"a headless worker runs ingest and/or detect: {sorted(settings.roles)}")
    engine = open_store(
        settings.database_url, app_role=settings.app_role, pool_size=settings.pool_size
    )
    metrics = ServerMetrics()
    sessions = SessionFactory(engine)
    # The events this worker stores end the cached pages of API processes on this data
    # directory at once (page_cache.py); API processes elsewhere see them within their TTL.
    sessions.watch_writes(PageGenerations(settings.page_generations_path).bump)
    upkeep = None
    bus = open_bus(settings, metrics)
    if ServerRole.INGEST in roles:
        # Ingest workers also run the event-store upkeep, as API processes do: partitions
        # before the first batch; retention waits for the first interval, so a worker restarting
        # in a loop never runs deletes (and does not slow its own start with them).
        maintenance = open_maintenance(settings, sessions, metrics)
        await asyncio.to_thread(maintenance.ensure_partitions)
        wire_ingest(bus, sessions, metrics, Quotas(sessions, metrics, settings.quota_refresh_s))
        upkeep = asyncio.create_task(maintenance.run_every(settings.maintenance_interval_s))
    detect = wire_detect(bus, sessions, metrics) if ServerRole.DETECT in roles else None
    server, thread = start_http_server(settings.port, addr=settings.host, registry=metrics.registry)
    try:
        await bus.start()
        log.info(
            "%s worker consuming %s; metrics on %s:%d",
            "+".join(sorted(roles)), settings.bus_url, settings.host, server.server_port,
        )  # fmt: skip
        await stop.wait()
        log.info("worker draining")
    finally:
        if upkeep is not None:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
        await bus.close()
        if detect is not None:
            detect.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        engine.dispose()


def run_workers(settings: Settings) -> int:
    """Run a headless worker until SIGINT or SIGTERM; returns the exit status."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_workers(settings, stop)

    asyncio.run(main())
    return 0
