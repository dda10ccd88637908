"""Server settings: where the data lives and where to listen."""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

DEFAULT_DATA_DIR = Path("a2z-data")
# The event loop uvicorn serves the API on: the standard library's, not uvloop. libuv accepts
# one connection per loop iteration (libuv pull request 3696, 2022), so on a busy loop (~20 ms
# an iteration at 200 clients) a burst of new connections (a dashboard's clients, agents
# reconnecting after a restart) was accepted at ~50 a second and first requests waited up to
# 2 s; asyncio accepts up to the listen backlog per wakeup (docs/adr/0025-api-event-loop.md).
EVENT_LOOP = "asyncio"


class ServerRole(StrEnum):
    """A part of the backend a process runs; the embedded default runs them all."""

    API = "api"  # REST API and dashboard (enrolment tokens, agent config, search)
    GATEWAY = "gateway"  # the mutual-TLS agent channel: batches in, published to the bus
    INGEST = "ingest"  # consumes the bus and writes the event store
    DETECT = "detect"  # consumes the bus, runs backend detections, writes their alerts


@dataclass(frozen=True, slots=True)
class JetStreamSettings:
    """The JetStream stream and consumers (docs/adr/0004-jetstream-bus.md explains each)."""

    stream: str = "A2Z_EVENTS"  # over a2z.events.>; the dead letters go to ``<stream>_DLQ``
    replicas: int = 1  # 3 in a cluster: one node may fail without losing acked batches
    duplicate_window: float = 120.0  # seconds a Nats-Msg-Id is remembered for publish dedup
    max_age: float = 7 * 86400.0  # seconds a batch is kept; ingest lag must stay below this
    max_deliver: int = 10  # deliveries before a failing batch is dead-lettered
    backoff: tuple[float, ...] = (10.0, 30.0, 60.0, 120.0, 300.0)  # redelivery delays, seconds
    concurrency: int = 4  # messages a consumer handles at once (ingest: IngestWorker.in_flight)
    publish_timeout: float = 10.0  # seconds publish keeps retrying before it reports failure
    namespace: str = ""  # prefix on every NATS subject, to share one NATS between deployments
    monitor_urls: tuple[str, ...] = ()  # NATS /varz endpoints: refuse a node without fsync


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to start; defaults give the embedded single-process mode."""

    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str | None = None  # default: SQLite file in data_dir
    app_role: str = "a2z_app"  # PostgreSQL role requests run as (owns nothing, RLS applies)
    pool_size: int = 10
    host: str = "127.0.0.1"
    port: int = 8000
    bus_url: str | None = None  # None: in-process bus; "nats://h1:4222,nats://h2:4222": JetStream
    roles: frozenset[ServerRole] = frozenset(ServerRole)  # what this process runs
    jetstream: JetStreamSettings = field(default_factory=JetStreamSettings)
    agent_host: str = "127.0.0.1"  # the agent gateway (mutual TLS), separate from the API
    agent_port: int | None = 8443  # None: no gateway in this process; 0: any free port
    # Names agents use to reach the gateway; its certificate is issued for these.
    gateway_names: tuple[str, ...] = ("127.0.0.1", "localhost")
    cert_recheck_s: float = 30.0  # open channels re-check revocation this often
    # An agent is shown offline when no heartbeat came for this long (3 missed at the 30 s
    # default interval).
    agent_offline_after_s: float = 90.0
    # Event-store upkeep (events/maintenance.py): day partitions exist from yesterday to this
    # many days ahead; partitions and retention are checked at start and this often.
    partition_days_ahead: int = 3
    maintenance_interval_s: float = 3600.0
    quota_refresh_s: float = 5.0  # tenant limits set in another process apply within this
    # A verified bearer credential is reused for this long without a database lookup; a
    # revocation by any process on this data directory still ends it at once. Set 0 when API
    # processes on other hosts share the database (docs/operating.md, "Several API processes").
    auth_cache_s: float = 30.0
    # The hot read path keeps a rendered page this long at most (page_cache.py); a write by any
    # process on this data directory ends it at once. 0 turns the cache off. Writers on other
    # hosts are seen within this bound (docs/operating.md, "Several API processes").
    hot_read_ttl_ms: int = 1000
    # Freeze the start-up heap out of the cyclic collector's reach once serving (app.py). Set
    # by ``a2z server``; off by default because tests build hundreds of apps in one process,
    # and frozen objects are never freed.
    freeze_gc: bool = False
    # uvicorn's access log (one line per request on stdout). Measured at half the server's CPU
    # of a cached hot read (docs/benchmarks.md, API); ``--no-access-log`` turns it off.
    access_log: bool = True
    workers: int = 1  # API processes sharing the listening socket (``--workers``)

    @property
    def runs_gateway(self) -> bool:
        """Whether this process listens for agents (the gateway role, with a port to use)."""
        return ServerRole.GATEWAY in self.roles and self.agent_port is not None

    @property
    def revocations_path(self) -> Path:
        """The revocation counter every process on this data directory shares."""
        return self.data_dir / "revocations"

    @property
    def page_generations_path(self) -> Path:
        """The per-tenant write generations every process on this data directory shares."""
        return self.data_dir / "page-generations"

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite file."""
        return self.db_url or f"sqlite:///{self.data_dir / 'a2z.db'}"


@contextmanager
def first_start_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``data_dir`` (made if missing) while files are created in it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel if we die
        yield
    finally:
        os.close(fd)


def load_secret(data_dir: Path) -> bytes:
    """Read the token-signing secret, creating it (mode 0600) on first start."""
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_bytes()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return secret
