"""Event search columns: typed copies of the fields the search API filters on, tenant-led indexes.

Rows stored before this revision keep NULL in the new columns (their JSON ``data`` is intact):
they are found by time, type, uid and ports, not by the new filters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 11:52:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Spelled out, not derived from today's models: a migration must mean the same thing forever.
INDEXES = {
    "ix_events_tenant_path_ts": ["tenant_id", "path", "ts"],
    "ix_events_tenant_orig_ip": ["tenant_id", "orig_ip"],
    "ix_events_tenant_resp_ip": ["tenant_id", "resp_ip"],
    "ix_events_tenant_query": ["tenant_id", "query"],
    "ix_events_tenant_host": ["tenant_id", "host"],
    "ix_events_tenant_server_name": ["tenant_id", "server_name"],
}


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("orig_ip", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("resp_ip", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("query", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("server_name", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("uri", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("user_agent", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("status_code", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("title", sa.Text(), nullable=True))
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        for name in reversed(INDEXES):
            batch_op.drop_index(name)
        for column in (
            "title",
            "status_code",
            "user_agent",
            "uri",
            "server_name",
            "host",
            "query",
            "resp_ip",
            "orig_ip",
        ):
            batch_op.drop_column(column)
