"""``create_app``: wires settings, store, bus and ingest into a FastAPI app.

Nothing happens at import time; everything is built by the factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from a2z import __version__
from a2z.server import api, openapi, problems
from a2z.server.agents.signal_relay import relay_for
from a2z.server.agents.signals import AgentSignals
from a2z.server.auth.principal_cache import PrincipalCache, watch_revocations
from a2z.server.auth.revocations import RevocationCounter
from a2z.server.auth.throttle import LoginThrottle
from a2z.server.bus import open_bus
from a2z.server.config import ServerRole, Settings, first_start_lock, load_secret
from a2z.server.context import ServerContext
from a2z.server.deps import reject_unknown_query
from a2z.server.detect.runner import wire_detect
from a2z.server.events.maintenance import open_maintenance
from a2z.server.gateway import Gateway
from a2z.server.hot_reads import HotReads
from a2z.server.ingest.runner import wire_ingest
from a2z.server.metrics import ServerMetrics
from a2z.server.page_cache import PageCache, PageGenerations
from a2z.server.pki.root import AgentRoot, load_or_create_ca, load_or_create_root
from a2z.server.quotas.service import Quotas
from a2z.server.releases.signing import load_or_create_signing_key, signing_certificate
from a2z.server.rules import service as rules
from a2z.server.store.engine import open_store
from a2z.server.store.session import SessionFactory


def build_context(settings: Settings) -> ServerContext:
    """Open (and migrate) the store, pick the bus, and wire the worker roles this process runs.

    The bus connects (and the ingest consumer starts) in the app's lifespan.
    """
    if settings.bus_url is None and ServerRole.INGEST not in settings.roles:
        # Nothing else could ever read the in-process bus: batches would be acked and lost.
        raise ValueError("the in-process bus needs the ingest role in the same process")
    engine = open_store(
        settings.database_url, app_role=settings.app_role, pool_size=settings.pool_size
    )
    sessions = SessionFactory(engine)
    with first_start_lock(settings.data_dir):
        # Processes started together on a new data directory (the api and gateway roles, or
        # --workers) would each create a secret and a root CA: one creates, the others load.
        secret = load_secret(settings.data_dir)
        pki_dir = settings.data_dir / "pki"
        if settings.runs_gateway:  # its server certificate, for the names agents use
            root = load_or_create_root(pki_dir, secret, list(settings.gateway_names))
        else:  # an api process beside a gateway process must not replace the latter's
            root = AgentRoot(*load_or_create_ca(pki_dir, secret), pki_dir)
        release_key = load_or_create_signing_key(root.directory, secret)
    metrics = ServerMetrics()
    maintenance = open_maintenance(settings, sessions, metrics)
    maintenance.ensure_partitions()  # before the first batch, so it lands in its day's partition
    quotas = Quotas(sessions, metrics, refresh_s=settings.quota_refresh_s)
    bus = open_bus(settings, metrics)
    if ServerRole.INGEST in settings.roles:
        wire_ingest(bus, sessions, metrics, quotas)
    detect = wire_detect(bus, sessions, metrics) if ServerRole.DETECT in settings.roles else None
    # Verified bearer credentials; the counter file makes a revocation committed by any process
    # on this data directory end every cached entry (auth/principal_cache.py).
    principals = PrincipalCache(
        RevocationCounter(settings.revocations_path), ttl_s=settings.auth_cache_s
    )
    watch_revocations(sessions, principals.invalidate)
    # Rendered hot pages; every committed write through this factory ends its tenant's pages in
    # every process on this data directory before the writer answers (page_cache.py).
    pages = PageCache(
        PageGenerations(settings.page_generations_path),
        ttl_s=settings.hot_read_ttl_ms / 1000,
        metrics=metrics,
    )
    sessions.watch_writes(pages.invalidate)
    signals, relay = AgentSignals(), None
    if engine.dialect.name == "postgresql":  # other processes may serve the agents: relay
        relay = relay_for(engine.url.render_as_string(hide_password=False), signals, metrics)
        signals.relay = relay.publish
    return ServerContext(
        settings=settings,
        sessions=sessions,
        bus=bus,
        metrics=metrics,
        secret=secret,
        root=root,
        release_cert=signing_certificate(root.directory, release_key, root.cert, root.key),
        quotas=quotas,
        maintenance=maintenance,
        throttle=LoginThrottle(sessions),
        principals=principals,
        pages=pages,
        detect=detect,
        signals=signals,
        signal_relay=relay,
    )


async def start_gateway(ctx: ServerContext) -> Gateway:
    """Listen for agents on the configured port, and for the API's signals to them."""
    assert ctx.settings.agent_port is not None
    gateway = Gateway(
        ctx,
        ctx.root,
        ctx.settings.agent_host,
        ctx.settings.agent_port,
        recheck_s=ctx.settings.cert_recheck_s,
    )
    await gateway.start()
    if ctx.signal_relay is not None:  # signals of the API calls made in other processes
        await asyncio.to_thread(ctx.signal_relay.start)
    return gateway


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, the app, ORM mappers, the rule catalog: hundreds of
    thousands of objects living as long as the process) out of the cyclic collector's
    generations. A full collection otherwise walks all of them — tens of milliseconds with
    every request on this process waiting — whenever enough requests' objects have survived
    into the oldest generation; frozen, it walks only what requests left behind."""
    gc.collect()  # start-up's garbage goes now, not into the frozen generation
    gc.freeze()


def create_app(settings: Settings | None = None, context: ServerContext | None = None) -> FastAPI:
    """The ASGI app; pass ``context`` to share one store between the app and a caller."""
    ctx = context or build_context(settings or Settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if ServerRole.API in ctx.settings.roles:
            # A new product version may ship new versions of rules tenants override: merge
            # them before serving, so the API and the effective rule sets show the result.
            rules.merge_upstream_all(
                sessions=ctx.sessions, catalog=ctx.rules_catalog, metrics=ctx.metrics
            )
        await ctx.bus.start()
        upkeep = asyncio.create_task(
            ctx.maintenance.run_every(ctx.settings.maintenance_interval_s), name="store-upkeep"
        )
        gateway = None
        if ctx.settings.runs_gateway:
            gateway = await start_gateway(ctx)
        app.state.gateway = gateway
        if ctx.settings.freeze_gc:
            freeze_startup_heap()
        yield
        if gateway is not None:
            await gateway.close()
        if ctx.signal_relay is not None:
            await asyncio.to_thread(ctx.signal_relay.close)
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep
        await ctx.bus.close()
        if ctx.detect is not None:
            ctx.detect.close()
        await asyncio.to_thread(ctx.sessions.close)

    app = FastAPI(
        title="A2Z SOC",
        version=__version__,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.ctx = ctx
    app.add_middleware(HotReads, ctx=ctx)
    problems.install(app)
    openapi.install(app)
    api.mount(app)
    return app
