"""Bulk writes on PostgreSQL: COPY into a staging table, then one INSERT ... SELECT.

COPY itself cannot skip duplicates, so rows go first into a temporary table of the same shape
(private to the connection) and then into the real table with ``ON CONFLICT DO NOTHING
RETURNING``. The staging table is truncated after each use: DELETE would leave dead rows that
every later COPY and INSERT ... SELECT scans again (throughput halved within a minute).

Both steps run in the caller's tenant-scoped transaction: the INSERT is the application
role's, so row-level security's WITH CHECK applies to every row exactly as for a plain INSERT.
Raw SQL on tenant tables lives here, in ``store/`` (ADR 0002).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import psycopg
from sqlalchemy import JSON, Table, column, select
from sqlalchemy import table as sql_table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DataError
from sqlalchemy.sql.dml import ReturningInsert

from a2z.server.store.session import ScopedSession

_json = msgspec.json.Encoder()


def _encode(value: Any) -> str:
    return _json.encode(value).decode()


def copy_insert_ignoring_duplicates(
    session: ScopedSession, table: Table, rows: Sequence[Mapping[str, Any]], returning: str
) -> list[Any]:
    """Write ``rows`` (one key per column of ``table``); the ``returning`` column of each new one.

    JSON columns take Python values (encoded here, as the ORM path's JSON type does). A value
    the database refuses (NUL in text, an over-long string) raises SQLAlchemy's ``DataError``,
    as the ORM path does, so callers treat both paths alike.
    """
    if not rows:
        return []
    columns = [c.name for c in table.columns]
    documents = {c.name for c in table.columns if isinstance(c.type, JSON)}
    names = ", ".join(columns)
    stage = f"{table.name}_stage"
    conn = session.connection()
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table.name} INCLUDING DEFAULTS)"
    )
    raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    copy_sql = f"COPY {stage} ({names}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row([_encode(row[c]) if c in documents else row[c] for c in columns])
    except psycopg.DataError as exc:
        raise DataError(copy_sql, None, exc) from exc
    staged = sql_table(stage, *(column(c) for c in columns))
    move: ReturningInsert[tuple[Any]] = (
        pg_insert(table)
        .from_select(columns, select(*staged.c))
        .on_conflict_do_nothing()
        .returning(table.c[returning])
    )
    inserted = list(conn.execute(move).scalars())
    conn.exec_driver_sql(f"TRUNCATE {stage}")  # a temporary table: no lock anyone else waits on
    return inserted
