"""A process started at a lower CPU priority has its PostgreSQL backends follow it
(store/backend_priority.py): what keeps an ingest worker's database work from delaying the
searches of the API on the same cores."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event, text

from a2z.server.store.backend_priority import EXTENSION, follow_niceness, process_niceness
from a2z.server.store.engine import make_engine
from tests.services import PG_ADMIN_DSN, pg_url, require_service, scratch_database

APP_ROLE = "a2z_app"


def backend_niceness(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT get_backend_priority(pg_backend_pid())")))


@pytest.fixture
def database() -> Iterator[str]:
    """A scratch database with the extension installed (as the operator does, a superuser)."""
    with scratch_database() as name:
        dsn = psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as admin:
            try:
                admin.execute(f"CREATE EXTENSION {EXTENSION}")
            except psycopg.errors.UndefinedFile as exc:  # the Debian package is missing
                require_service(f"PostgreSQL's {EXTENSION} extension", exc)
        yield name


def test_a_nice_process_runs_its_backends_at_its_niceness(database: str) -> None:
    # The way an operator starts an ingest worker beside the API: under nice. The process
    # opens the store as every role does and connects as the application role (no superuser).
    script = textwrap.dedent(
        f"""
        from sqlalchemy import text
        from a2z.server.store.engine import open_store
        engine = open_store({pg_url(database)!r}, app_role={APP_ROLE!r}, pool_size=2)
        with engine.connect() as one, engine.connect() as two:
            for conn in (one, two):
                print(conn.scalar(text("SELECT current_user")),
                      conn.scalar(text("SELECT get_backend_priority(pg_backend_pid())")))
        """
    )
    done = subprocess.run(
        ["nice", "-n", "7", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.split() == [APP_ROLE, "7", APP_ROLE, "7"]


def test_a_process_at_normal_priority_leaves_backends_alone(database: str) -> None:
    if process_niceness() != 0:  # e.g. `nice make test`: every engine here follows it
        pytest.skip(f"the suite runs at niceness {process_niceness()}, not 0")
    engine = make_engine(pg_url(database), pool_size=1)
    try:
        assert backend_niceness(engine) == 0
    finally:
        engine.dispose()


def test_every_new_connection_follows_and_is_handed_out_idle(database: str) -> None:
    engine = make_engine(pg_url(database), pool_size=1)
    follow_niceness(engine, 5)
    try:
        assert backend_niceness(engine) == 5
        engine.dispose()  # the pool's connection closes; the next one is a new backend
        raw = engine.raw_connection()
        try:
            # outside any transaction of ours: the caller's first statement begins its own
            assert raw.driver_connection.info.transaction_status == TransactionStatus.IDLE
        finally:
            raw.close()
        assert backend_niceness(engine) == 5
    finally:
        engine.dispose()


def test_without_the_extension_a_warning_says_what_to_install_and_queries_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with scratch_database() as name:
        engine = make_engine(pg_url(name), pool_size=2)
        follow_niceness(engine, 5)
        try:
            with caplog.at_level(logging.WARNING, logger="a2z.server.store.backend_priority"):
                with engine.connect() as one, engine.connect() as two:
                    assert one.scalar(text("SELECT 1")) == two.scalar(text("SELECT 1")) == 1
        finally:
            engine.dispose()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # once per engine, not once per connection
    assert "CREATE EXTENSION prioritize" in warnings[0]
    assert "postgresql-<version>-prioritize" in warnings[0]


def test_a_refused_renice_is_a_warning_and_the_connection_serves(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Without privilege a backend can only be made nicer: one already at 15 (here by a listener
    # that runs first) refuses 10, as PostgreSQL's own backends would if the server itself ran
    # at a niceness above the process's.
    engine = make_engine(pg_url(database), pool_size=1)

    def nicer_first(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT set_backend_priority(pg_backend_pid(), 15)")
        dbapi_conn.commit()

    event.listen(engine, "connect", nicer_first)
    follow_niceness(engine, 10)
    try:
        with caplog.at_level(logging.WARNING, logger="a2z.server.store.backend_priority"):
            assert backend_niceness(engine) == 15
    finally:
        engine.dispose()
    assert [r.getMessage() for r in caplog.records] == [
        "database backend kept its priority: set_backend_priority(10) refused"
    ]
