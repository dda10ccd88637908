"""Row-level security DDL for PostgreSQL: the database's half of tenant isolation.

Every tenant-owned table gets RLS enabled *and forced* (so even the owner is filtered) and one
policy whose USING and WITH CHECK compare ``tenant_id`` with the transaction-local setting
``app.tenant_id``. With no tenant set the setting is empty, the comparison is NULL, and the
table shows no rows and accepts no writes.
"""

from __future__ import annotations

TENANT_SETTING = "app.tenant_id"
USER_SETTING = "app.user_id"
GLOBAL_INTEL_SETTING = "app.global_intel"  # 'on' only in a session opened to change global intel
APPEND_ONLY_TABLES = ("audit_events",)  # tenant tables the database refuses to change
SYSTEM_APPEND_ONLY_TABLES = ("system_audit_events",)  # the same, for tables of no tenant

_CURRENT_TENANT = f"NULLIF(current_setting('{TENANT_SETTING}', true), '')::uuid"
_CURRENT_USER = f"NULLIF(current_setting('{USER_SETTING}', true), '')::uuid"


def enable_rls(table: str) -> list[str]:
    """Statements that put ``table`` under tenant row-level security."""
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING (tenant_id = {_CURRENT_TENANT}) WITH CHECK (tenant_id = {_CURRENT_TENANT})",
    ]


def own_memberships_policy() -> str:
    """Login reads the memberships of the user whose password it just verified, in any tenant.

    Read-only (FOR SELECT) and keyed to ``app.user_id``, which only the login path sets.
    """
    return (
        f"CREATE POLICY own_memberships ON memberships FOR SELECT USING (user_id = {_CURRENT_USER})"
    )


def global_intel_guard(table: str) -> list[str]:
    """Statements that let every transaction read ``table`` and only one that set
    ``app.global_intel`` to 'on' (the session factory does so for operators' global intel
    routes) write it. Forced, so the owner account is held to it too."""
    flag = f"current_setting('{GLOBAL_INTEL_SETTING}', true) = 'on'"
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY global_read ON {table} FOR SELECT USING (true)",
        f"CREATE POLICY global_write ON {table} USING ({flag}) WITH CHECK ({flag})",
    ]


def drop_global_intel_guard(table: str) -> list[str]:
    """Inverse of ``global_intel_guard``."""
    return [
        f"DROP POLICY IF EXISTS global_write ON {table}",
        f"DROP POLICY IF EXISTS global_read ON {table}",
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    ]


def disable_rls(table: str) -> list[str]:
    """Inverse of ``enable_rls``."""
    return [
        f"DROP POLICY IF EXISTS tenant_isolation ON {table}",
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    ]


def append_only_trigger(table: str, dialect: str) -> list[str]:
    """Statements that make the database refuse UPDATE and DELETE on ``table``."""
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION a2z_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'the audit log is append-only'; END$$",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION a2z_refuse_change()",
        ]
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    ]
