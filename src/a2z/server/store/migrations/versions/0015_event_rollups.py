"""Per-tenant rollups of closed hours for the histogram and top-N (ADR 0019).

``event_rollups`` holds counts per tenant, field, slot (hour or whole day), record type and
value; ``rollup_days`` how far they cover each day. Both start empty: the maintenance job
fills them from the stored rows, and until it has, queries read the raw rows as before.
``tenant_id`` leads both keys; RLS is enabled and forced on both (PostgreSQL).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from a2z.server.store.tenancy import disable_rls, enable_rls

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ROLLUPS = "event_rollups"
DAYS = "rollup_days"


def upgrade() -> None:
    op.create_table(
        ROLLUPS,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("grain", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "field", "grain", "slot", "path", "value"),
    )
    op.create_table(
        DAYS,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("through", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in (ROLLUPS, DAYS):
            for statement in enable_rls(table):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in (DAYS, ROLLUPS):
            for statement in disable_rls(table):
                op.execute(statement)
    op.drop_table(DAYS)
    op.drop_table(ROLLUPS)
