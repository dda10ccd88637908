"""The operators' audit trail: actions on what belongs to no tenant (agent releases).

Append-only like the tenant audit log (triggers refuse UPDATE and DELETE even for the owner;
the app role is not granted them). No tenant_id and no RLS: operators read it, tenants never.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 16:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from a2z.server.store.tenancy import append_only_trigger

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "system_audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("system_audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_system_audit_at", ["at", "id"], unique=False)
    for statement in append_only_trigger("system_audit_events", op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    with op.batch_alter_table("system_audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_system_audit_at")
    op.drop_table("system_audit_events")
