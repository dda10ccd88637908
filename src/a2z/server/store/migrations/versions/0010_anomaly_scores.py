"""Anomaly scores of conn records, written by the detect role and joined by uid in event search;
each tenant's own anomaly threshold.

RLS on the table (PostgreSQL); ``tenant_id`` leads the key and the retention index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 17:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from a2z.server.store.tenancy import disable_rls, enable_rls

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "anomaly_scores"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "uid"),
    )
    op.create_index("ix_anomaly_scores_tenant_ts", TABLE, ["tenant_id", "ts"], unique=False)
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.add_column(sa.Column("anomaly_threshold", sa.Double(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for statement in enable_rls(TABLE):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in disable_rls(TABLE):
            op.execute(statement)
    op.drop_index("ix_anomaly_scores_tenant_ts", table_name=TABLE)
    op.drop_table(TABLE)
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.drop_column("anomaly_threshold")
