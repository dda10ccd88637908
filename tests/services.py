"""Access to the local services tests use, and the rule for when one is missing.

With ``A2Z_REQUIRE_SERVICES=1`` (CI) a missing service fails the test; otherwise the test is
skipped with the reason, so a laptop without PostgreSQL can still run the rest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

PG_ADMIN_DSN = os.environ.get("A2Z_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_service(name: str, error: Exception) -> None:
    """Fail (CI) or skip (laptop) because ``name`` is not reachable."""
    message = f"{name} is not reachable: {error}"
    if os.environ.get("A2Z_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (A2Z_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def pg_admin() -> psycopg.Connection:
    """An autocommit superuser connection to the maintenance database."""
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        require_service("PostgreSQL", exc)
        raise


def pg_url(dbname: str, user: str = "postgres") -> str:
    """SQLAlchemy URL of a database on the test server."""
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
    return f"postgresql+psycopg://{user}@{host}:{port}/{dbname}"


@contextmanager
def scratch_database(template: str | None = None) -> Iterator[str]:
    """A new, uniquely named database (optionally copied from ``template``), dropped after."""
    name = f"a2z_test_{uuid.uuid4().hex[:12]}"
    with pg_admin() as admin:
        suffix = f" TEMPLATE {template}" if template else ""
        admin.execute(f"CREATE DATABASE {name}{suffix}")
    try:
        yield name
    finally:
        with pg_admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
