"""Event string indexes only where the string is: partial, and on PostgreSQL usable for prefixes.

``query``, ``host`` and ``server_name`` are set on dns, http and ssl records only (about half of
a typical stream); their indexes held an entry for every event, NULLs included, so each write
paid for them on every row. They now index only the rows that carry the string. On PostgreSQL
they also use the ``varchar_pattern_ops`` operator class: under a non-C collation (C.UTF-8,
en_US.UTF-8) a plain b-tree cannot serve ``LIKE 'prefix%'``, and the search API's prefix filter
scanned the tenant's rows instead; the pattern class serves both equality and prefix.
docs/adr/0018-event-string-indexes-and-prefix-search.md gives the measurements.

On PostgreSQL the parent's index cascades to every partition (existing ones included), so
new day partitions get it too; ``tenant_id`` still leads every index.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27 22:00:00
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Spelled out, not derived from today's models: a migration must mean the same thing forever.
COLUMNS = {
    "ix_events_tenant_query": "query",
    "ix_events_tenant_host": "host",
    "ix_events_tenant_server_name": "server_name",
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, column in COLUMNS.items():
        op.drop_index(name, table_name="events")
        where = text(f"{column} IS NOT NULL")
        op.create_index(
            name, "events", ["tenant_id", column], unique=False,
            postgresql_ops={column: "varchar_pattern_ops"} if postgres else {},
            postgresql_where=where, sqlite_where=where,
        )  # fmt: skip


def downgrade() -> None:
    for name, column in COLUMNS.items():
        op.drop_index(name, table_name="events")
        op.create_index(name, "events", ["tenant_id", column], unique=False)
