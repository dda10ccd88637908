"""The one place routers are mounted."""

from __future__ import annotations

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from a2z.server.agents import views as agents
from a2z.server.agents.commands import views as agent_commands
from a2z.server.agents.config import views as agent_config
from a2z.server.audit import views as audit
from a2z.server.auth import views as auth
from a2z.server.deps import Context
from a2z.server.events import views as events
from a2z.server.intel import global_views as intel_global
from a2z.server.intel import views as intel
from a2z.server.releases import views as releases
from a2z.server.rules import views as rules
from a2z.server.tenants import views as tenants
from a2z.server.web import views as web


def mount(app: FastAPI) -> None:
    """Attach every router and the operational endpoints."""
    for module in (
        auth,
        tenants,
        agents,
        agent_config,
        agent_commands,
        releases,
        events,
        rules,
        intel,
        intel_global,
        audit,
        web,
    ):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics(ctx: Context) -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
