"""Threat intel: tenant indicators and warning lists (RLS), global ones (no tenant), versions.

The global tables carry no tenant_id and get no row-level security: every tenant's transaction
reads them (ADR 12). The agents table gains the intel version each agent reports.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from a2z.server.store.tenancy import disable_rls, enable_rls

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TENANT_TABLES = ("intel_indicators", "intel_warnings", "intel_state")


def _indicator_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("removed_version", sa.BigInteger(), nullable=True),
    ]


def _warning_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    tenant = [sa.Column("tenant_id", sa.Uuid(), nullable=False)]
    op.create_table(
        "intel_indicators",
        *tenant,
        *_indicator_columns(),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_index(
        "uq_intel_indicators_key",
        "intel_indicators",
        ["tenant_id", "type", "value", "source"],
        unique=True,
    )
    op.create_index("ix_intel_indicators_version", "intel_indicators", ["tenant_id", "version"])
    op.create_index("ix_intel_indicators_source", "intel_indicators", ["tenant_id", "source"])
    op.create_index(
        "ix_intel_indicators_seen", "intel_indicators", ["tenant_id", "first_seen", "id"]
    )
    op.create_table(
        "intel_warnings",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        *_warning_columns(),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_index(
        "uq_intel_warnings_value", "intel_warnings", ["tenant_id", "kind", "value"], unique=True
    )
    op.create_index(
        "ix_intel_warnings_created", "intel_warnings", ["tenant_id", "created_at", "id"]
    )
    op.create_table(
        "intel_state",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("floor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_table("intel_global_indicators", *_indicator_columns(), sa.PrimaryKeyConstraint("id"))
    op.create_index(
        "uq_intel_global_indicators_key",
        "intel_global_indicators",
        ["type", "value", "source"],
        unique=True,
    )
    op.create_index("ix_intel_global_indicators_version", "intel_global_indicators", ["version"])
    op.create_index("ix_intel_global_indicators_source", "intel_global_indicators", ["source"])
    op.create_index(
        "ix_intel_global_indicators_seen", "intel_global_indicators", ["first_seen", "id"]
    )
    op.create_table("intel_global_warnings", *_warning_columns(), sa.PrimaryKeyConstraint("id"))
    op.create_index(
        "uq_intel_global_warnings_value", "intel_global_warnings", ["kind", "value"], unique=True
    )
    op.create_index(
        "ix_intel_global_warnings_created", "intel_global_warnings", ["created_at", "id"]
    )
    op.create_table(
        "intel_global_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("floor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("intel_version", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("intel_rejected_reason", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in enable_rls(table):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in disable_rls(table):
                op.execute(statement)
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("intel_rejected_reason")
        batch.drop_column("intel_version")
    for table in (
        "intel_global_state",
        "intel_global_warnings",
        "intel_global_indicators",
        "intel_state",
        "intel_warnings",
        "intel_indicators",
    ):
        op.drop_table(table)
