"""Bulk writes on PostgreSQL: whole columns as array parameters, or COPY through a staging table.

``insert_columns_ignoring_duplicates`` (the event store's path, ADR 0021) sends each column as
one binary array parameter and inserts ``SELECT ... FROM unnest(...)`` in a single statement.
PostgreSQL refuses ``COPY FROM`` into a table with row-level security, so the rows could not go
straight into the table by COPY; the arrays spare the staging table's write, scan and TRUNCATE
and the text parsing of every value, and the statement is prepared once per connection.

``copy_insert_ignoring_duplicates``, the older path, is kept for smaller tables (anomaly scores):

COPY itself cannot skip duplicates, so rows go first into a temporary table of the same shape
(private to the connection) and then into the real table with ``ON CONFLICT DO NOTHING
RETURNING``. The staging table is truncated after each use: DELETE would leave dead rows that
every later COPY and INSERT ... SELECT scans again (throughput halved within a minute).

Both steps run in the caller's tenant-scoped transaction: the INSERT is the application
role's, so row-level security's WITH CHECK applies to every row exactly as for a plain INSERT.
Raw SQL on tenant tables lives here, in ``store/`` (ADR 0002).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache
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


_ARRAY_TYPES: dict[type, str] = {float: "float8", int: "int8", str: "text", uuid.UUID: "uuid"}
"""How a column's values travel, by its Python type: a JSON column's values as text (cast to
the column's type in the statement), every other value in PostgreSQL's binary format."""


def insert_columns_ignoring_duplicates(
    session: ScopedSession,
    table: Table,
    *,
    constants: Mapping[str, Any],
    arrays: Mapping[str, Sequence[Any]],
    ordinal: str,
    returning: str,
) -> list[Any]:
    """Insert one row per element of the ``arrays`` (column -> values, all the same length):
    each row also takes the ``constants`` (column -> value) and its position from 0 in the
    ``ordinal`` column. Rows whose key is already stored are skipped (``ON CONFLICT DO
    NOTHING``); returns the ``returning`` column of each new one.

    The statement is the application role's plain INSERT, in the caller's tenant-scoped
    transaction, so row-level security's WITH CHECK applies to every row. JSON columns take
    encoded JSON text. A value the database refuses (NUL in text, an over-long string) raises
    SQLAlchemy's ``DataError``, as the ORM path does.
    """
    lengths = {len(values) for values in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns of unequal length: {sorted(lengths)}")
    if not lengths.pop():
        return []
    sql = _unnest_insert(table, tuple(constants), tuple(arrays), ordinal, returning)
    raw: psycopg.Connection[Any] = session.connection().connection.driver_connection  # type: ignore[assignment]
    try:
        with raw.cursor() as cur:
            cur.execute(sql, [*constants.values(), *arrays.values()])
            return [row[0] for row in cur.fetchall()]
    except psycopg.DataError as exc:
        raise DataError(sql, None, exc) from exc


@lru_cache(maxsize=16)
def _unnest_insert(
    table: Table, constants: tuple[str, ...], arrays: tuple[str, ...], ordinal: str, returning: str
) -> str:
    """``INSERT ... SELECT consts, ordinality - 1, u.* FROM unnest(arrays)``, built once: the
    same text each batch, which psycopg prepares on the server after a few executions."""
    unknown = {ordinal, returning} - set(table.c.keys())  # the others are looked up below
    if unknown:  # only the table's own column names go into the statement's text
        raise KeyError(f"not columns of {table.name}: {sorted(unknown)}")
    selected = [f"%b::{_array_type(table, c)}" for c in constants]
    selected.append("u.ordinality - 1")
    # JSON columns are JSONB on PostgreSQL (events.models.DOCUMENT); text has no assignment
    # cast to it. Other columns take PostgreSQL's assignment casts (text to VARCHAR(n) refuses
    # an over-long value, where an explicit cast would cut it).
    selected.extend(f"u.{c}::jsonb" if _is_json(table, c) else f"u.{c}" for c in arrays)
    params = ", ".join(f"%b::{_array_type(table, c)}[]" for c in arrays)
    names = ", ".join([*constants, ordinal, *arrays])
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {', '.join(selected)}"  # noqa: S608 (column names)
        f" FROM unnest({params}) WITH ORDINALITY AS u({', '.join(arrays)}, ordinality)"
        f" ON CONFLICT DO NOTHING RETURNING {returning}"
    )


def _is_json(table: Table, name: str) -> bool:
    return isinstance(table.c[name].type, JSON)


def _array_type(table: Table, name: str) -> str:
    if _is_json(table, name):
        return "text"
    return _ARRAY_TYPES[table.c[name].type.python_type]


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
