"""Engine construction for SQLite (embedded default) and PostgreSQL, and schema bring-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from a2z.server.store import migrate
from a2z.server.store.backend_priority import follow_niceness, process_niceness


def normalise_url(url: str) -> str:
    """Pick our drivers: psycopg 3 for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _json_dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# JSON columns (events.data) are (de)serialised with msgspec: several times faster than the
# standard library's json on the ingest path.
_JSON_CODEC: dict[str, Any] = {
    "json_serializer": _json_dumps,
    "json_deserializer": msgspec.json.decode,
}


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create the engine for ``url``; for SQLite, make the file's directory and enable WAL."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **_JSON_CODEC)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # JIT off: PostgreSQL compiles a query it *estimates* expensive, and the search filters it
    # misestimates (a substring match it thinks rare) paid ~500 ms of compiling for a query
    # that then ran in tens of ms (docs/adr/0019). Nothing here runs long enough to win it back.
    engine = create_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=0,
        connect_args={"options": "-c jit=off"}, **_JSON_CODEC,
    )  # fmt: skip
    # A process started at a lower priority (an ingest worker beside the API) has the backends
    # doing its work follow it (backend_priority.py); at niceness 0 this adds nothing.
    follow_niceness(engine, process_niceness())
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the dashboard read while ingest writes; synchronous=NORMAL is durable in WAL
    # against process crashes, which is what an ack after commit promises.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def open_store(url: str, *, app_role: str, pool_size: int = 10) -> Engine:
    """Migrate the schema with ``url``'s account, then return the engine requests use.

    On PostgreSQL, requests run as ``app_role`` — a role that owns nothing and cannot bypass
    row-level security — never as the account that owns the tables. Its password, if the
    server needs one, comes from ``A2Z_APP_DB_PASSWORD``.
    """
    owner = make_engine(url, pool_size=1)
    migrate.upgrade(owner)
    if owner.dialect.name != "postgresql":
        owner.dispose()
        return make_engine(url, pool_size=pool_size)
    migrate.ensure_app_role(owner, app_role)
    owner.dispose()
    app_url = make_url(normalise_url(url)).set(
        username=app_role, password=os.environ.get("A2Z_APP_DB_PASSWORD")
    )
    return make_engine(app_url.render_as_string(hide_password=False), pool_size=pool_size)
