"""Event-store upkeep the server runs at start and then periodically: day partitions created
ahead (PostgreSQL), retention (whole partitions dropped, then per-tenant deletes), and the
rollups of closed hours the histogram and top-N read (``events.rollups``, more often).

It needs the account that owns the tables for DDL (``owner``); row deletes run through the
session factory in each tenant's scope, so row-level security applies to them as to any query.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Integer, cast, delete, func, literal, select

from a2z.server.config import Settings
from a2z.server.events import rollups, scores, textblocks, usage
from a2z.server.events.models import Event, EventBatch
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
    # Rollups (ADR 0019): hours are rolled up once they ended this long ago (records a little
    # late still land in raw rows, not in a rolled-up hour that would then be redone), and
    # the rollup pass runs this often between the full passes.
    rollup_lag_s: float = 600.0
    rollup_every_s: float = 300.0
    # What the last rollup pass did to each tenant's free-text gram blocks (ADR 0023).
    last_text_blocks: dict[uuid.UUID, textblocks.BuildReport] = field(default_factory=dict)

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
                # A batch's key goes with the last of its rows (``day``: its newest record's).
                session.execute(delete(EventBatch).where(EventBatch.day < first_day))
                usage.forget_before(session=session, day=first_day)
                rollups.forget_before(session=session, day=first_day)
                textblocks.forget_before(session=session, day=first_day)
                scores.forget_before(session=session, ts=first_day * DAY)
            rows = int(getattr(gone, "rowcount", 0) or 0)
            if rows:
                deleted[tenant_id] = rows
        self.metrics.retention_deleted.inc(sum(deleted.values()))
        self.metrics.maintenance_seconds.labels("retention").observe(time.perf_counter() - started)
        return RetentionReport(dropped, deleted)

    def refresh_rollups(self) -> dict[uuid.UUID, rollups.RefreshReport]:
        """Roll up each tenant's newly closed hours, and redo days a late record changed; on
        PostgreSQL also build their free-text gram blocks (``last_text_blocks`` says what).

        One transaction per tenant. On PostgreSQL a tenant another process is rolling up right
        now (api and ingest processes all run this) is skipped, not waited for.
        """
        started = time.perf_counter()
        now = self.clock()
        with self.sessions.system() as session:
            tenant_ids = list(session.scalars(select(Tenant.id)))
        done = {}
        text = {}
        for tenant_id in tenant_ids:
            with self.sessions.tenant(tenant_id) as session:
                if self.owner_url is not None and not session.scalar(_try_lock(tenant_id)):
                    continue
                done[tenant_id] = rollups.refresh(session=session, now=now, lag=self.rollup_lag_s)
                # Free-text gram blocks of the same closed hours, under the same lock: only
                # PostgreSQL reads them (``textblocks.regions``), so only there are they built.
                if self.owner_url is not None:
                    text[tenant_id] = textblocks.refresh(
                        session=session, now=now, lag=self.rollup_lag_s
                    )
        self.last_text_blocks = text
        self.metrics.maintenance_seconds.labels("rollups").observe(time.perf_counter() - started)
        return done

    def run_once(self) -> None:
        """One pass of everything; a failing step is logged and counted, the others still run."""
        self._steps(
            ("partitions", self.ensure_partitions),
            ("retention", self.retention),
            ("rollups", self.refresh_rollups),
        )

    def _steps(self, *steps: tuple[str, Callable[[], object]]) -> None:
        for name, step in steps:
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
        (``ensure_partitions``), so restarts never run retention's deletes. Between full passes
        the rollups are refreshed every ``rollup_every_s``, so the hours read from raw rows stay
        few.
        """
        tick = min(interval_s, self.rollup_every_s)
        since_full = 0.0
        while True:
            await asyncio.sleep(tick)
            since_full += tick
            if since_full >= interval_s:
                since_full = 0.0
                await asyncio.to_thread(self.run_once)
            else:
                await asyncio.to_thread(self._steps, ("rollups", self.refresh_rollups))


_ROLLUP_LOCK = 0x0A20_0019  # advisory lock class of the rollup pass (ADR 0019)


def _lock_key(tenant_id: uuid.UUID) -> int:
    """A tenant's advisory lock key (int4); a collision only makes two tenants take turns."""
    return zlib.crc32(tenant_id.bytes) - (1 << 31)


def _try_lock(tenant_id: uuid.UUID) -> Any:
    """The rollup pass's transaction lock on one tenant; false if another process holds it."""
    key = (cast(literal(k), Integer) for k in (_ROLLUP_LOCK, _lock_key(tenant_id)))  # int4 form
    return select(func.pg_try_advisory_xact_lock(*key))


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
