"""The server's wired services, built once by ``create_app`` and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass, field

from a2z.rules.catalog import Catalog, shipped_catalog
from a2z.server.auth.throttle import LoginThrottle
from a2z.server.bus.base import Bus
from a2z.server.config import Settings
from a2z.server.metrics import ServerMetrics
from a2z.server.pki.root import AgentRoot
from a2z.server.store.session import SessionFactory


@dataclass
class ServerContext:
    """What a request handler may reach: settings, the session factory, the bus, metrics."""

    settings: Settings
    sessions: SessionFactory
    bus: Bus
    metrics: ServerMetrics
    secret: bytes  # signs access tokens, encrypts CA keys
    root: AgentRoot  # the agent root CA and the gateway certificate
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    rules_catalog: Catalog = field(default_factory=shipped_catalog)  # the shipped Sigma rules
