"""Bloom filters of the free-text 3-grams per block of stored events (ADR 0023).

``event_text_blocks`` starts empty and nothing else is touched: the maintenance job builds the
blocks of the hours it has already closed on its next passes (the rollups stay as they are),
and until a day has its blocks, free text reads that day's raw rows as before. ``tenant_id``
leads the key; RLS is enabled and forced (PostgreSQL).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from a2z.server.store.tenancy import disable_rls, enable_rls

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

BLOCKS = "event_text_blocks"


def upgrade() -> None:
    op.create_table(
        BLOCKS,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("ts_lo", sa.Double(), nullable=False),
        sa.Column("ts_hi", sa.Double(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("through", sa.BigInteger(), nullable=False),
        sa.Column("bloom", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "block"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Kept in the row, not TOASTed: the lookup calls get_bit on each filter once per bit
        # tested, and each call would fetch an out-of-line value again.
        op.execute(f"ALTER TABLE {BLOCKS} ALTER COLUMN bloom SET STORAGE MAIN")
        for statement in enable_rls(BLOCKS):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in disable_rls(BLOCKS):
            op.execute(statement)
    op.drop_table(BLOCKS)
