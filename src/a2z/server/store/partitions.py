"""Daily time partitions of ``events`` on PostgreSQL: created ahead, moved out of the default,
dropped by retention.

``events`` is partitioned by RANGE on ``ts`` (epoch seconds). Each UTC day gets its own
partition, ``events_pYYYYMMDD``, created a few days ahead by the server's maintenance task. A
row whose ``ts`` has no day partition (an agent's clock far off, a backlog older than the
partitions) lands in ``events_default``, so no write ever fails for want of a partition; when
its day's partition is created later, those rows move into it.

PostgreSQL does not carry row-level security from the parent to a partition queried directly,
so every partition gets RLS enabled, forced and the tenant policy, and the application role
its row grants, in the transaction that creates it. DDL runs as the owning account, never as
the application role; raw SQL on tenant tables lives here, in ``store/`` (ADR 0002).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text

from a2z.server.store.migrate import check_role_name, lock_schema
from a2z.server.store.tenancy import enable_rls

log = logging.getLogger(__name__)

DAY = 86_400
PARENT = "events"
DEFAULT_PARTITION = "events_default"
_NAME = re.compile(r"^events_p(\d{8})$")
APP_GRANTS = "SELECT, INSERT, UPDATE, DELETE"


def day_of(ts: float) -> int:
    """The UTC day number (days since the epoch) of ``ts``."""
    return int(ts // DAY)


def partition_name(day: int) -> str:
    """``events_pYYYYMMDD`` for day number ``day``."""
    return f"events_p{datetime.fromtimestamp(day * DAY, UTC):%Y%m%d}"


def day_of_partition(name: str) -> int | None:
    """Inverse of ``partition_name``; None for any other table name."""
    m = _NAME.match(name)
    if m is None:
        return None
    stamp = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return day_of(stamp.timestamp())


@dataclass(frozen=True, slots=True)
class PartitionChange:
    """What one maintenance pass did."""

    created: tuple[str, ...] = ()
    moved_rows: int = 0  # rows taken out of the default partition into new day partitions
    dropped: tuple[str, ...] = ()


def secure_partition(conn: Connection, name: str, app_role: str) -> None:
    """Row-level security and the application role's row grants on one partition."""
    check_role_name(app_role)
    for statement in enable_rls(name):
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(f"GRANT {APP_GRANTS} ON {name} TO {app_role}")


def create_default(conn: Connection, app_role: str | None) -> None:
    """The catch-all partition for timestamps no day partition covers (migration time)."""
    conn.exec_driver_sql(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {PARENT} DEFAULT")
    for statement in enable_rls(DEFAULT_PARTITION):
        conn.exec_driver_sql(statement)
    if app_role is not None:
        conn.exec_driver_sql(f"GRANT {APP_GRANTS} ON {DEFAULT_PARTITION} TO {app_role}")


def day_partitions(conn: Connection) -> dict[int, str]:
    """The existing day partitions of ``events``, by day number."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    ).scalars()
    found = {}
    for name in rows:
        day = day_of_partition(name)
        if day is not None:
            found[day] = name
    return found


def ensure_days(conn: Connection, days: Iterable[int], app_role: str) -> PartitionChange:
    """Create the partitions of ``days`` that do not exist yet, in the caller's transaction.

    Rows of those days already in the default partition move into the new partition first
    (PostgreSQL refuses to attach a range the default still holds rows of). The default is
    un-forced for the move so a non-superuser owner sees every tenant's rows; the change is
    transactional and the table is locked, so nobody else ever sees it un-forced.
    """
    lock_schema(conn)
    existing = day_partitions(conn)
    created: list[str] = []
    moved = 0
    for day in sorted(set(days) - set(existing)):
        name = partition_name(day)
        low, high = day * DAY, (day + 1) * DAY
        conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)")
        conn.exec_driver_sql(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        conn.exec_driver_sql(f"ALTER TABLE {DEFAULT_PARTITION} NO FORCE ROW LEVEL SECURITY")
        move = (
            f"WITH gone AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts >= :low AND ts < :high "  # noqa: S608 (our names)
            f"RETURNING *) INSERT INTO {name} SELECT * FROM gone"
        )
        moved += conn.execute(
            text(move),
            {"low": low, "high": high},
        ).rowcount
        conn.exec_driver_sql(f"ALTER TABLE {DEFAULT_PARTITION} FORCE ROW LEVEL SECURITY")
        secure_partition(conn, name, app_role)
        conn.exec_driver_sql(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
        )
        created.append(name)
    if created:
        log.info("created event partitions %s (%d rows moved from the default)", created, moved)
    return PartitionChange(created=tuple(created), moved_rows=moved)


def drop_before(conn: Connection, day: int) -> tuple[str, ...]:
    """Drop every day partition of a day before ``day``, in the caller's transaction."""
    lock_schema(conn)
    dropped = []
    for d, name in sorted(day_partitions(conn).items()):
        if d < day:
            conn.exec_driver_sql(f"DROP TABLE {name}")
            dropped.append(name)
    if dropped:
        log.info("dropped event partitions %s", dropped)
    return tuple(dropped)
