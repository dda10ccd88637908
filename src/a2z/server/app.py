"""``create_app``: wires settings, store, bus and ingest into a FastAPI app.

Nothing happens at import time; everything is built by the factory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from a2z import __version__
from a2z.server import api, problems
from a2z.server.bus.memory import MemoryBus
from a2z.server.config import Settings, load_secret
from a2z.server.context import ServerContext
from a2z.server.ingest.worker import IngestWorker
from a2z.server.metrics import ServerMetrics
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory


def build_context(settings: Settings) -> ServerContext:
    """Open (and migrate) the store, and wire the in-process bus to the ingest worker."""
    engine = open_store(
        settings.database_url, app_role=settings.app_role, pool_size=settings.pool_size
    )
    sessions = SessionFactory(engine)
    metrics = ServerMetrics()
    bus = MemoryBus()
    bus.subscribe("a2z.events.", IngestWorker(sessions, metrics).handle)
    return ServerContext(
        settings=settings,
        sessions=sessions,
        bus=bus,
        metrics=metrics,
        secret=load_secret(settings.data_dir),
    )


def create_app(settings: Settings | None = None, context: ServerContext | None = None) -> FastAPI:
    """The ASGI app; pass ``context`` to share one store between the app and a caller."""
    ctx = context or build_context(settings or Settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await ctx.bus.close()
        ctx.sessions.engine.dispose()

    app = FastAPI(title="A2Z SOC", version=__version__, lifespan=lifespan)
    app.state.ctx = ctx
    problems.install(app)
    api.mount(app)
    return app
