"""The server's wired services, built once by ``create_app`` and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass, field

from a2z.rules.catalog import Catalog, shipped_catalog
from a2z.server.agents.signal_relay import PgSignalRelay
from a2z.server.agents.signals import AgentSignals
from a2z.server.auth.principal_cache import PrincipalCache
from a2z.server.auth.revocations import RevocationCounter
from a2z.server.auth.throttle import LoginThrottle
from a2z.server.bus.base import Bus
from a2z.server.config import Settings
from a2z.server.detect.worker import DetectWorker
from a2z.server.events.maintenance import StoreMaintenance
from a2z.server.metrics import ServerMetrics
from a2z.server.page_cache import PageCache, PageGenerations
from a2z.server.pki.root import AgentRoot
from a2z.server.quotas.service import Quotas
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
    quotas: Quotas  # tenant limits and residency, cached
    maintenance: StoreMaintenance  # partitions ahead, retention
    throttle: LoginThrottle  # failed logins, counted in the store (shared by processes)
    # Verified bearer credentials; revocations anywhere on this data directory clear it.
    principals: PrincipalCache = field(
        default_factory=lambda: PrincipalCache(RevocationCounter(), ttl_s=0)
    )
    # Rendered hot pages; a write by any process on this data directory ends a tenant's.
    pages: PageCache = field(default_factory=lambda: PageCache(PageGenerations(), ttl_s=0))
    detect: DetectWorker | None = None  # the detect role's worker when this process runs it
    # API -> gateway: agents with a new configuration version or command to deliver.
    signals: AgentSignals = field(default_factory=AgentSignals)
    # PostgreSQL: carries those signals to the gateways of the other server processes.
    signal_relay: PgSignalRelay | None = None
    release_cert: bytes = b""  # PEM: the release-signing key's certificate, from the root
    rules_catalog: Catalog = field(default_factory=shipped_catalog)  # the shipped Sigma rules
