"""Global intel is written only by a transaction opened for it (operators' routes).

The global indicator, warning and state tables have no tenant and were readable and writable
by the application role, guarded only by the API's operator check. Row-level security now lets
every transaction read them and only one that set ``app.global_intel`` to 'on' write them
(``tenancy.global_intel_guard``). SQLite has no RLS: the session factory refuses the same
writes there (``store.session``).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 10:20:00.000000
"""

from __future__ import annotations

from alembic import op

from a2z.server.store.tenancy import drop_global_intel_guard, global_intel_guard

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("intel_global_indicators", "intel_global_warnings", "intel_global_state")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        for statement in global_intel_guard(table):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        for statement in drop_global_intel_guard(table):
            op.execute(statement)
