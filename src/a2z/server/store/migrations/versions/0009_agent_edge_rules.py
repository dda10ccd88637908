"""Edge rules (ADR 13): which pushed rule set each agent runs, and the last one it refused.

Columns on ``agents`` only (already tenant-keyed, RLS forced since 0001).

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-27 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rules_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("rules_rejected_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("rules_rejected_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("rules_rejected_reason")
        batch_op.drop_column("rules_rejected_digest")
        batch_op.drop_column("rules_digest")
