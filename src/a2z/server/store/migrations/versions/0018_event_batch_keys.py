"""One key per stored batch instead of one per event (ADR 0026).

``event_batches`` holds ``(tenant_id, agent_id, boot_epoch, seq)`` of every batch the store
holds, filled here from the events already stored (so a batch re-sent after the upgrade still
stores nothing), and ``events`` loses its primary key: ingest inserts a batch's key and its
events in one statement, the events only if the key was new, so the per-event key index and
its per-event unique check are no longer needed. ``tenant_id`` leads the new table's key and
index; RLS is enabled and forced (PostgreSQL).

On SQLite a primary key cannot be dropped in place: ``events`` is rebuilt from its own
definition without it (the rows copied, the indexes created again from their stored SQL).

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29 03:00:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

from a2z.server.store.sqlite_rebuild import rebuild_sqlite_table
from a2z.server.store.tenancy import disable_rls, enable_rls

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BATCHES = "event_batches"
KEY = ("tenant_id", "agent_id", "boot_epoch", "seq")
EVENT_KEY = (*KEY, "idx", "ts")
DAY = 86_400


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        BATCHES,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("boot_epoch", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY),
    )
    op.create_index("ix_event_batches_tenant_day", BATCHES, ["tenant_id", "day"])
    keys = ", ".join(KEY)
    day = f"CAST(floor(max(ts) / {DAY}) AS INTEGER)"
    backfill = (
        f"INSERT INTO {BATCHES} ({keys}, day, events) "  # noqa: S608 (constants of this file)
        f"SELECT {keys}, {day}, count(*) FROM events GROUP BY {keys}"
    )
    if postgres:
        # The owner reads every tenant's rows through the parent (whose policy is the one that
        # applies to a query on it); un-forced only inside this transaction, under its lock.
        op.execute("ALTER TABLE events NO FORCE ROW LEVEL SECURITY")
        op.execute(backfill)
        op.execute("ALTER TABLE events FORCE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE events DROP CONSTRAINT events_pkey")  # and every partition's
        for statement in enable_rls(BATCHES):
            op.execute(statement)
    else:
        op.execute(backfill)
        _rebuild_sqlite_events(primary_key=False)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(f"ALTER TABLE events ADD PRIMARY KEY ({', '.join(EVENT_KEY)})")
        for statement in disable_rls(BATCHES):
            op.execute(statement)
    else:
        _rebuild_sqlite_events(primary_key=True)
    op.drop_index("ix_event_batches_tenant_day", table_name=BATCHES)
    op.drop_table(BATCHES)


_KEY_CLAUSE = re.compile(r",\s*PRIMARY KEY \([^)]*\)", re.IGNORECASE)


def _rebuild_sqlite_events(*, primary_key: bool) -> None:
    """``events`` again from its stored definition, with or without its primary key."""

    def definition(table_sql: str) -> str:
        body = _KEY_CLAUSE.sub("", table_sql)
        if primary_key:
            body = body.rstrip().removesuffix(")") + f", PRIMARY KEY ({', '.join(EVENT_KEY)}))"
        return body

    rebuild_sqlite_table("events", definition)
