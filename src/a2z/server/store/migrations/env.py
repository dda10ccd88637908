"""Alembic environment: always runs on a connection handed over by ``a2z.server.store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from a2z.server import models  # noqa: F401  (registers every table on the metadata)
from a2z.server.store.base import Base
from a2z.server.store.migrate import include_name

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
    compare_type=True,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()
