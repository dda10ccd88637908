"""Engine construction for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from a2z.server.store.base import Base


def make_engine(url: str) -> Engine:
    """Create the engine for ``url``; for SQLite, make the file's directory and enable WAL."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the dashboard read while ingest writes; synchronous=NORMAL is durable in WAL
    # against process crashes, which is what an ack after commit promises.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def create_schema(engine: Engine) -> None:
    """Create every table that does not exist yet."""
    # Import the models so their tables are registered on Base.metadata.
    from a2z.server import models  # noqa: F401

    Base.metadata.create_all(engine)
