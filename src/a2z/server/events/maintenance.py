"""Event-store upkeep the server runs at start and then periodically: day partitions created
ahead (PostgreSQL), and retention (whole partitions dropped, then per-tenant deletes).

It needs the account that owns the tables for DDL (``owner``); row deletes run through the
session factory in each tenant's scope, so row-level security applies to them as to any query.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, func, select

from a2z.server.config import Settings
from a2z.server.events import scores, usage
from a2z.server.events.models import Event
from a2z.server.metrics import ServerMetrics
from a2z.server.store import partitions
from a2z.server.store.engine import make_engine, normalise_url
from a2z.server.store.partitions import DAY, day_of
from a2z.server.store.session import SessionFactory
from a2z.server.tenants.models import Tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass removed."""

    dropped_partitions: tuple[str, ...] = ()
    deleted_rows: dict[uuid.UUID, int] = field(default_factory=dict)  # per tenant


@dataclass
class StoreMaintenance:
    """Partitions ahead and retention; ``owner_url`` is None on SQLite (no partitions there)."""

    sessions: SessionFactory
    metrics: ServerMetrics
    owner_url: str | None = None  # the table owner's account, connected only for DDL
    app_role: str = "a2z_app"
    days_back: int = 1  # partitions kept ready for records this many days old...
    days_ahead: int = 3  # ...and this many days ahead (agent clocks run ahead, too)
    clock: Callable[[], float] = time.time

    def ensure_partitions(self) -> partitions.PartitionChange:
        """Create the day partitions from ``days_back`` ago to ``days_ahead`` on (PostgreSQL)."""
        if self.owner_url is None:
            return partitions.PartitionChange()
        today = day_of(self.clock())
        with self.owner() as conn:
            change = partitions.ensure_days(
                conn, range(today - self.days_back, today + self.days_ahead + 1), self.app_role
            )
        self.metrics.partitions_created.inc(len(change.created))
        self.metrics.partition_rows_moved.inc(change.moved_rows)
        return change

    def retention(self) -> RetentionReport:
        """Drop whole day partitions older than every tenant's retention, then delete each
        tenant's rows older than its own retention from what remains (default partition too).

        Cut-offs fall on UTC day boundaries, so usage (kept per day) goes with its rows exactly.
        """
        started = time.perf_counter()
        today = day_of(self.clock())
        with self.sessions.system() as session:
            keep = {t: d for t, d in session.execute(select(Tenant.id, Tenant.retention_days))}
        if not keep:
            return RetentionReport()
        dropped: tuple[str, ...] = ()
        if self.owner_url is not None:
            with self.owner() as conn:
                dropped = partitions.drop_before(conn, today - max(keep.values()))
            self.metrics.partitions_dropped.inc(len(dropped))
        deleted = {}
        for tenant_id, days in keep.items():
            first_day = today - days
            with self.sessions.tenant(tenant_id) as session:
                gone = session.execute(delete(Event).where(Event.ts < first_day * DAY))
                usage.forget_before(session=session, day=first_day)
                scores.forget_before(session=session, ts=first_day * DAY)
            rows = int(getattr(gone, "rowcount", 0) or 0)
            if rows:
                deleted[tenant_id] = rows
        self.metrics.retention_deleted.inc(sum(deleted.values()))
        self.metrics.maintenance_seconds.labels("retention").observe(time.perf_counter() - started)
        return RetentionReport(dropped, deleted)

    def run_once(self) -> None:
        """One pass of everything; a failing step is logged and counted, the others still run."""
        for name, step in (("partitions", self.ensure_partitions), ("retention", self.retention)):
            try:
                step()
            except Exception:
                self.metrics.maintenance_errors.labels(name).inc()
                log.exception("event-store maintenance step %s failed", name)

    @contextmanager
    def owner(self) -> Iterator[Connection]:
        """A transaction as the owning account; connected per pass (hourly), closed after."""
        if self.owner_url is None:
            raise RuntimeError("no owner account: this store has no partitions")
        engine = make_engine(self.owner_url, pool_size=1)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    async def run_every(self, interval_s: float) -> None:
        """Run ``run_once`` every ``interval_s`` seconds until cancelled (off the event loop).

        The first pass comes after one interval: at start the server only creates partitions
        (``ensure_partitions``), so restarts never run retention's deletes.
        """
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.run_once)


def open_maintenance(
    settings: Settings, sessions: SessionFactory, metrics: ServerMetrics
) -> StoreMaintenance:
    """The upkeep of the store ``settings`` name (the owner account for DDL on PostgreSQL)."""
    return StoreMaintenance(
        sessions,
        metrics,
        owner_url=settings.database_url if _postgres(settings.database_url) else None,
        app_role=settings.app_role,
        days_ahead=settings.partition_days_ahead,
    )


def _postgres(url: str) -> bool:
    return normalise_url(url).startswith("postgresql")


def stored_rows(sessions: SessionFactory, tenant_id: uuid.UUID) -> int:
    """How many events ``tenant_id`` has in the store (tests, the CLI)."""
    with sessions.tenant(tenant_id) as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)
