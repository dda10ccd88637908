"""Schema migrations (Alembic) and, on PostgreSQL, the unprivileged application role."""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from importlib.resources import files
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from a2z.server.store.tenancy import APPEND_ONLY_TABLES, SYSTEM_APPEND_ONLY_TABLES

NameType = Literal[
    "schema",
    "table",
    "column",
    "index",
    "unique_constraint",
    "foreign_key_constraint",
    "check_constraint",
]
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Key of the PostgreSQL advisory lock that serialises schema changes: api, ingest and detect
# processes starting together would otherwise run the same migration at once and all but one
# fail half-way, and one process's GRANTs would collide with another's partition maintenance.
# Any constant works; this is "a2z-migr" in ASCII.
_MIGRATION_LOCK = 0x61327A2D6D696772


def include_name(
    name: str | None, type_: NameType, parent_names: MutableMapping[Any, str | None]
) -> bool:
    """Autogenerate's filter: event partitions are managed at run time, not by the models.

    Their indexes are the parent's, attached per partition, so they are left out as well.
    """
    if type_ == "table":
        return not is_partition(name or "")
    if type_ == "index":
        return not is_partition(parent_names.get("table_name") or "")
    return True


def is_partition(table: str) -> bool:
    """True for a partition of ``events`` (``store.partitions`` names them)."""
    return table == "events_default" or re.match(r"^events_p\d{8}$", table) is not None


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at our migrations; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(files("a2z.server.store") / "migrations"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; processes starting together take turns."""
    config = alembic_config(engine)
    with _sqlite_file_lock(engine), engine.begin() as conn:
        lock_schema(conn)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def lock_schema(conn: Connection) -> None:
    """PostgreSQL: hold the schema lock until this transaction ends.

    Every schema or grant change takes it (migrations, the app role's grants, partition
    maintenance): concurrent GRANTs on the same tables fail with "tuple concurrently updated".
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """SQLite: an exclusive lock on ``<database>.migrate.lock`` while migrating.

    SQLite runs DDL outside the driver's implicit transactions, so two processes can both see
    "no alembic_version table" and both try to create it; a lock file orders them.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision``."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def check_role_name(role: str) -> None:
    """Refuse a role name that is not a plain identifier (it is spliced into DDL)."""
    if not _ROLE_NAME.match(role):
        raise ValueError(f"invalid role name {role!r}")


def ensure_app_role(owner: Engine, role: str) -> None:
    """Create the role the application connects as, and give it row access and nothing more.

    The role owns nothing, is not a superuser and has no BYPASSRLS, so row-level security
    applies to every query it runs. It may not UPDATE or DELETE the audit log. Event partitions
    created later get the same grants when they are created (``store.partitions``).
    """
    check_role_name(role)
    with owner.begin() as conn:
        lock_schema(conn)
        exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
        if not exists:
            # Roles belong to the cluster, not the database, so a process migrating another
            # database may create it at the same moment: the loser's duplicate is no error.
            conn.execute(
                text(
                    "DO $$ BEGIN"
                    f" CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB;"
                    " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                )
            )
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        )
        conn.execute(text(f"REVOKE ALL ON alembic_version FROM {role}"))
        for table in (*APPEND_ONLY_TABLES, *SYSTEM_APPEND_ONLY_TABLES):
            conn.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}"))
