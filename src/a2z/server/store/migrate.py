"""Schema migrations (Alembic) and, on PostgreSQL, the unprivileged application role."""

from __future__ import annotations

import re
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from a2z.server.store.tenancy import APPEND_ONLY_TABLES

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at our migrations; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(files("a2z.server.store") / "migrations"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision``."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def ensure_app_role(owner: Engine, role: str) -> None:
    """Create the role the application connects as, and give it row access and nothing more.

    The role owns nothing, is not a superuser and has no BYPASSRLS, so row-level security
    applies to every query it runs. It may not UPDATE or DELETE the audit log.
    """
    if not _ROLE_NAME.match(role):
        raise ValueError(f"invalid role name {role!r}")
    with owner.begin() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
        if not exists:
            conn.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        )
        conn.execute(text(f"REVOKE ALL ON alembic_version FROM {role}"))
        for table in APPEND_ONLY_TABLES:
            conn.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}"))
