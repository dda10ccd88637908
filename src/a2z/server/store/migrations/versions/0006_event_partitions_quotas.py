"""Event store: daily RANGE partitions on PostgreSQL, record fields as JSONB, residency tag;
per-tenant retention, region and limits; stored-usage ledger.

``events`` is rebuilt: the old table is renamed aside, the new one created (on PostgreSQL
partitioned by ``ts`` with a default partition that takes every row until the server creates
day partitions and moves them there), the rows copied with the envelope fields taken out of
``data`` (they live in typed columns), and the old table dropped. ``ts`` joins the primary key
because PostgreSQL requires the partition column in every unique key; a re-sent batch has the
same ``ts``, so duplicates still collapse. Rows stored before this revision have no usage
recorded (``stored_usage`` starts empty) and no region.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 13:30:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from a2z.server.store.partitions import create_default
from a2z.server.store.tenancy import disable_rls, enable_rls

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Spelled out, not derived from today's models: a migration must mean the same thing forever.
INDEXES = {
    "ix_events_tenant_ts": ["tenant_id", "ts"],
    "ix_events_tenant_path_ts": ["tenant_id", "path", "ts"],
    "ix_events_tenant_orig_ip": ["tenant_id", "orig_ip"],
    "ix_events_tenant_resp_ip": ["tenant_id", "resp_ip"],
    "ix_events_tenant_query": ["tenant_id", "query"],
    "ix_events_tenant_host": ["tenant_id", "host"],
    "ix_events_tenant_server_name": ["tenant_id", "server_name"],
}
ENVELOPE = ("_path", "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")
ENVELOPE_COLUMNS = ("path", "ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p")
KEY = ["tenant_id", "agent_id", "boot_epoch", "seq", "idx"]
COMMON = [
    "tenant_id", "agent_id", "boot_epoch", "seq", "idx", "ts", "path", "uid", "orig_h",
    "orig_p", "resp_h", "resp_p", "orig_ip", "resp_ip", "query", "host", "server_name", "uri",
    "user_agent", "status_code", "title",
]  # fmt: skip


def _columns(data: sa.types.TypeEngine[Any]) -> list[sa.Column[Any]]:
    return [
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("boot_epoch", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("path", sa.String(length=32), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("orig_h", sa.String(length=64), nullable=False),
        sa.Column("orig_p", sa.Integer(), nullable=False),
        sa.Column("resp_h", sa.String(length=64), nullable=False),
        sa.Column("resp_p", sa.Integer(), nullable=False),
        sa.Column("data", data, nullable=False),
        sa.Column("orig_ip", sa.String(length=32), nullable=True),
        sa.Column("resp_ip", sa.String(length=32), nullable=True),
        sa.Column("query", sa.String(length=255), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("server_name", sa.String(length=255), nullable=True),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
    ]


def _set_aside(postgres: bool) -> None:
    """Rename ``events`` to ``events_legacy``, freeing its index and key names."""
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute("ALTER TABLE events RENAME TO events_legacy")
    if postgres:
        op.execute("ALTER TABLE events_legacy RENAME CONSTRAINT events_pkey TO events_legacy_pkey")
        # The owner reads every tenant's rows to copy them (a non-superuser owner is otherwise
        # filtered by the forced policy).
        for statement in disable_rls("events_legacy"):
            op.execute(statement)


def _create_indexes() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "events", columns, unique=False)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retention_days", sa.Integer(), server_default="30", nullable=False)
        )
        batch_op.add_column(sa.Column("region", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("events_per_second", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("burst_events", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "stored_usage",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day"),
    )

    _set_aside(postgres)
    data_type = postgresql.JSONB() if postgres else sa.JSON()
    op.create_table(
        "events",
        *_columns(data_type),
        sa.Column("region", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint(*KEY, "ts"),
        postgresql_partition_by="RANGE (ts)",
    )
    _create_indexes()
    if postgres:
        create_default(op.get_bind(), None)  # ensure_app_role grants on it after migrating
        rest = "data::jsonb" + "".join(f" - '{field}'" for field in ENVELOPE)
    else:
        rest = "json_remove(data" + "".join(f", '$.\"{f}\"'" for f in ENVELOPE) + ")"
    names = ", ".join(COMMON)  # constants of this file, no input
    op.execute(f"INSERT INTO events ({names}, data) SELECT {names}, {rest} FROM events_legacy")  # noqa: S608
    op.drop_table("events_legacy")
    if postgres:
        for table in ("events", "stored_usage"):
            for statement in enable_rls(table):
                op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute("ALTER TABLE events RENAME TO events_partitioned")
    if postgres:
        op.execute("ALTER TABLE events_partitioned RENAME CONSTRAINT events_pkey TO aside_pkey")
        for statement in disable_rls("events_partitioned"):
            op.execute(statement)
    op.create_table("events", *_columns(sa.Text()), sa.PrimaryKeyConstraint(*KEY))
    _create_indexes()
    if postgres:
        pairs = ", ".join(f"'{f}', {c}" for f, c in zip(ENVELOPE, ENVELOPE_COLUMNS, strict=True))
        whole = f"(jsonb_build_object({pairs}) || data)::text"
        # A non-superuser owner must see every partition's rows (each has its forced policy).
        partitions = op.get_bind().exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events_partitioned'::regclass"
        )
        for (partition,) in partitions.all():
            for statement in disable_rls(partition):
                op.execute(statement)
    else:
        pairs = ", ".join(
            f"'$.\"{f}\"', {c}" for f, c in zip(ENVELOPE, ENVELOPE_COLUMNS, strict=True)
        )
        whole = f"json_set(data, {pairs})"
    names = ", ".join(COMMON)
    # Duplicates by the old key (one record re-sent with another ts) keep the first copy.
    # (SQLite needs a WHERE before ON CONFLICT to parse an INSERT ... SELECT.)
    conflict = " WHERE true ON CONFLICT DO NOTHING"
    copy = f"INSERT INTO events ({names}, data) SELECT {names}, {whole} FROM events_partitioned"  # noqa: S608
    op.execute(copy + conflict)
    if postgres:
        op.execute("DROP TABLE events_partitioned CASCADE")
        for statement in enable_rls("events"):
            op.execute(statement)
    else:
        op.drop_table("events_partitioned")

    if postgres:
        for statement in disable_rls("stored_usage"):
            op.execute(statement)
    op.drop_table("stored_usage")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("max_stored_bytes")
        batch_op.drop_column("burst_events")
        batch_op.drop_column("events_per_second")
        batch_op.drop_column("region")
        batch_op.drop_column("retention_days")
