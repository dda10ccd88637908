"""PostgreSQL row-level security: the database itself keeps tenants apart.

These tests talk to PostgreSQL directly, as the application role, bypassing every Python-side
scope, so they prove the isolation does not depend on the ORM hook.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Table, func, select, text
from sqlalchemy.exc import DBAPIError

from a2z.server.agents import service as agents
from a2z.server.agents.models import Agent
from a2z.server.app import build_context
from a2z.server.config import Settings
from a2z.server.context import ServerContext
from a2z.server.events.models import Event
from a2z.server.store import bulk
from a2z.server.store.tenancy import APPEND_ONLY_TABLES, SYSTEM_APPEND_ONLY_TABLES
from tests.server.conftest import APP_ROLE, TenantFixture, make_tenant
from tests.services import pg_url, scratch_database


@pytest.fixture
def pg(pg_template: str, tmp_path: object) -> Iterator[tuple[str, ServerContext]]:
    with scratch_database(pg_template) as name:
        ctx = build_context(Settings(data_dir=tmp_path, db_url=pg_url(name), pool_size=1))  # type: ignore[arg-type]
        yield name, ctx
        ctx.sessions.engine.dispose()


def as_app(dbname: str) -> psycopg.Connection:
    return psycopg.connect(pg_url(dbname, APP_ROLE).replace("+psycopg", ""), autocommit=False)


def tenant_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attname = 'tenant_id'"
    ).fetchall()
    return sorted(r[0] for r in rows)


def test_every_tenant_table_and_partition_has_forced_rls_with_check(
    pg: tuple[str, ServerContext],
) -> None:
    name, _ = pg
    with psycopg.connect(pg_url(name).replace("+psycopg", "")) as conn:
        tables = tenant_tables(conn)
        assert "events" in tables and "memberships" in tables
        # Every partition of events counts as its own table here: PostgreSQL does not apply the
        # parent's policies to a partition queried directly. build_context made the day ones.
        assert "events_default" in tables and "stored_usage" in tables
        assert sum(t.startswith("events_p") for t in tables) == 5  # yesterday .. +3 days
        for table in tables:
            enabled, forced = conn.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s",
                (table,),
            ).fetchone()  # type: ignore[misc]
            assert enabled and forced, table
            policies = conn.execute(
                "SELECT polname, polcmd, pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) "
                "FROM pg_policy WHERE polrelid = %s::regclass",
                (table,),
            ).fetchall()
            isolation = [p for p in policies if p[0] == "tenant_isolation"]
            assert len(isolation) == 1, table
            _, cmd, using, check = isolation[0]
            assert cmd == "*" and "app.tenant_id" in using and "app.tenant_id" in check, table
            # Any other policy must be read-only (the login path's own_memberships).
            assert all(p[1] == "r" for p in policies if p[0] != "tenant_isolation"), table


def test_app_role_is_unprivileged_and_owns_nothing(pg: tuple[str, ServerContext]) -> None:
    name, _ = pg
    with psycopg.connect(pg_url(name).replace("+psycopg", "")) as conn:
        superuser, bypass, createrole = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = %s",
            (APP_ROLE,),
        ).fetchone()  # type: ignore[misc]
        assert not superuser and not bypass and not createrole
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = %s",
            (APP_ROLE,),
        ).fetchone()
        assert owned == (0,)


def test_no_tenant_set_means_no_rows_and_no_writes(pg: tuple[str, ServerContext]) -> None:
    name, ctx = pg
    a, b = make_tenant(ctx, "alpha"), make_tenant(ctx, "bravo")
    with as_app(name) as conn:
        for table in tenant_tables(conn):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO agents (tenant_id, id, name, created_at) VALUES (%s, %s, 'x', now())",
                (a.id, uuid.uuid4()),
            )
    with as_app(name) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(a.id),))
        assert conn.execute("SELECT count(*) FROM agents").fetchone() == (1,)
        # Writing a row that claims tenant B from tenant A's transaction is refused by WITH CHECK.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO agents (tenant_id, id, name, created_at) VALUES (%s, %s, 'x', now())",
                (b.id, uuid.uuid4()),
            )


def test_global_intel_is_read_by_every_tenant_and_written_only_by_an_operator_session(
    pg: tuple[str, ServerContext],
) -> None:
    """As the app role, bypassing the ORM: a tenant's transaction (or one with no tenant) reads
    the global intel tables and cannot write them; one that set app.global_intel can."""
    name, ctx = pg
    a = make_tenant(ctx, "alpha")
    ctx.sessions.engine.dispose()
    insert = "INSERT INTO intel_global_warnings (id, kind, value, note, created_by, created_at) VALUES (%s, 'domain', %s, '', 't', now())"
    with as_app(name) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(a.id),))
        conn.execute("SELECT set_config('app.global_intel', 'on', true)")
        conn.execute(insert, (uuid.uuid4(), "ok.example"))
        conn.commit()
    tables = ("intel_global_indicators", "intel_global_warnings", "intel_global_state")
    for tenant in (str(a.id), None):
        for statement, args, refused in (
            (insert, (uuid.uuid4(), "smuggled.example"), True),  # WITH CHECK refuses it
            ("INSERT INTO intel_global_state (id, version, floor) VALUES (1, 9, 0)", (), True),
            ("UPDATE intel_global_warnings SET note = 'x'", (), False),  # sees no row to change
            ("DELETE FROM intel_global_warnings", (), False),
        ):
            with as_app(name) as conn:
                if tenant is not None:
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                assert conn.execute("SELECT count(*) FROM intel_global_warnings").fetchone() == (1,)
                for table in tables:
                    conn.execute(f"SELECT count(*) FROM {table}")
                if refused:
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(statement, args)
                else:
                    assert conn.execute(statement, args).rowcount == 0, statement
    with psycopg.connect(pg_url(name).replace("+psycopg", "")) as owner:
        forced = owner.execute(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relforcerowsecurity"
            " AND relname = ANY(%s)", (list(tables),),
        ).fetchall()  # fmt: skip
        assert sorted(r[0] for r in forced) == sorted(tables)
        assert owner.execute("SELECT value FROM intel_global_warnings").fetchall() == [
            ("ok.example",)
        ]


def test_audit_log_refuses_update_and_delete_even_for_the_owner(
    pg: tuple[str, ServerContext],
) -> None:
    name, ctx = pg
    a = make_tenant(ctx, "alpha")
    ctx.sessions.engine.dispose()
    for table in APPEND_ONLY_TABLES:
        with as_app(name) as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(a.id),))
            conn.execute(
                f"INSERT INTO {table} (tenant_id, id, at, actor, action, target, source, outcome, detail) "
                "VALUES (%s, %s, now(), 'test', 'test.action', '', '', 'success', '{}')",
                (a.id, uuid.uuid4()),
            )
            conn.commit()
        for statement in (f"UPDATE {table} SET actor = 'x'", f"DELETE FROM {table}"):
            with as_app(name) as conn:
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(a.id),))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            with psycopg.connect(pg_url(name).replace("+psycopg", "")) as owner:  # superuser owner
                with pytest.raises(psycopg.errors.RaiseException):
                    owner.execute(statement)


def test_system_audit_trail_is_append_only_for_the_app_role_and_the_owner(
    pg: tuple[str, ServerContext],
) -> None:
    name, ctx = pg
    ctx.sessions.engine.dispose()
    for table in SYSTEM_APPEND_ONLY_TABLES:
        with as_app(name) as conn:  # the app role writes it (no tenant: not under RLS)
            conn.execute(
                f"INSERT INTO {table} (id, at, actor, action, target, source, outcome, detail) "
                "VALUES (%s, now(), 'cli', 'release.publish', '', '', 'success', '{}')",
                (uuid.uuid4(),),
            )
            conn.commit()
        for statement in (f"UPDATE {table} SET actor = 'x'", f"DELETE FROM {table}"):
            with as_app(name) as conn:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            with psycopg.connect(pg_url(name).replace("+psycopg", "")) as owner:
                with pytest.raises(psycopg.errors.RaiseException):
                    owner.execute(statement)


def test_unique_indexes_on_tenant_tables_lead_with_tenant_id(pg: tuple[str, ServerContext]) -> None:
    """Leak-surface audit: a unique key without tenant_id would be a cross-tenant existence oracle."""
    name, _ = pg
    with psycopg.connect(pg_url(name).replace("+psycopg", "")) as conn:
        for table in tenant_tables(conn):
            rows = conn.execute(
                "SELECT i.indexrelid::regclass::text, a.attname FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                "WHERE i.indrelid = %s::regclass AND i.indisunique",
                (table,),
            ).fetchall()
            for index, first in rows:
                assert first == "tenant_id", f"{table}.{index} starts with {first}"
        # No views without security_invoker, no SECURITY DEFINER functions of ours.
        assert conn.execute(
            "SELECT count(*) FROM pg_views WHERE schemaname = 'public'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.prosecdef"
        ).fetchone() == (0,)


def test_pool_bleed_interleaved_tenants_over_one_connection(pg: tuple[str, ServerContext]) -> None:
    """Thousands of interleaved transactions for two tenants on a pool of one, a tenth failing
    mid-transaction: each sees only its own rows, and no tenant setting survives a checkout."""
    _, ctx = pg
    a, b = make_tenant(ctx, "alpha"), make_tenant(ctx, "bravo")
    with ctx.sessions.tenant(b.id) as session:
        for i in range(3):
            agents.create(session=session, name=f"bravo-{i}")
    expected = {a.id: {a.agent_id}, b.id: None}
    with ctx.sessions.tenant(b.id) as session:
        expected[b.id] = set(session.scalars(select(Agent.id)))
    rng = random.Random(7)
    errors: list[str] = []

    def worker(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(500):
            tenant: TenantFixture = local.choice([a, b])
            try:
                with ctx.sessions.tenant(tenant.id) as session:
                    seen = set(session.scalars(select(Agent.id)))
                    raw = session.execute(text("SELECT tenant_id FROM agents")).scalars().all()
                    if seen != expected[tenant.id] or any(t != tenant.id for t in raw):
                        errors.append(f"{tenant.name} saw {seen}")
                    if local.random() < 0.1:
                        raise RuntimeError("fail mid-transaction")
            except RuntimeError:
                pass
            with ctx.sessions.engine.connect() as conn:
                leftover = conn.scalar(text("SELECT current_setting('app.tenant_id', true)"))
                if leftover not in (None, ""):
                    errors.append(f"checkout carried tenant {leftover}")

    threads = [threading.Thread(target=worker, args=(rng.random(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []


def test_bulk_copy_path_is_under_rls_with_check(pg: tuple[str, ServerContext]) -> None:
    # COPY lands in a private staging table; the move into events is the app role's INSERT, so
    # a row claiming another tenant is refused by the policy, not just by the Python code.
    _, ctx = pg
    a, b = make_tenant(ctx, "alpha"), make_tenant(ctx, "bravo")
    table = Event.__table__
    assert isinstance(table, Table)
    forged = {c.name: None for c in table.columns} | {
        "tenant_id": b.id, "agent_id": b.agent_id, "boot_epoch": 1, "seq": 1, "idx": 0,
        "ts": 1.0, "path": "conn", "uid": "C", "orig_h": "1.1.1.1", "orig_p": 1,
        "resp_h": "2.2.2.2", "resp_p": 2, "data": {},
    }  # fmt: skip
    with pytest.raises(DBAPIError) as caught, ctx.sessions.tenant(a.id) as session:
        bulk.copy_insert_ignoring_duplicates(session, table, [forged], returning="idx")
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)
    with ctx.sessions.tenant(b.id) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0
