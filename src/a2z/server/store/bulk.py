"""Bulk writes on PostgreSQL: whole columns as array parameters, or COPY through a staging table.

``insert_columns_once`` (the event store's path, ADR 0021 and 0026) sends each column as one
parameter (text columns joined into one string that the server splits, numbers as packed
binary arrays) and inserts ``SELECT ... FROM unnest(...)`` in a single statement, guarded by
one claimed key for the whole batch.
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

import struct
import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import msgspec
import psycopg
from psycopg import postgres
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format
from sqlalchemy import JSON, Table, column, select
from sqlalchemy import table as sql_table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DataError
from sqlalchemy.sql.dml import ReturningInsert

from a2z.server.store.session import ScopedSession

_json = msgspec.json.Encoder()


def _encode(value: Any) -> str:
    return _json.encode(value).decode()


_ARRAY_TYPES: dict[type, str] = {
    float: "float8", int: "int8", str: "text", uuid.UUID: "uuid", bytes: "bytea",
}  # fmt: skip
"""How a column's values travel, by its Python type: a JSON column's values as text (cast to
the column's type in the statement), every other value in PostgreSQL's binary format."""

# A text column travels as one string, its values joined by the ASCII unit separator, with the
# record separator standing alone for NULL, and the server splits it (``string_to_array``):
# psycopg dumps a list element by element in Python (~0.4 us each; 13 of the 17 columns per
# record are text), a string in C. A column where the split would not give back the values (one
# contains either control character, or its only value is "") travels as an array, as before:
# a statement shape of its own (cached, and prepared like the others once it recurs).
_SEPARATOR = "\x1f"
_NULL = "\x1e"
_SPLIT = f"string_to_array(%b::text, chr({ord(_SEPARATOR)}), chr({ord(_NULL)}))"

# Numeric and bytea columns travel already in PostgreSQL's binary array format, packed here:
# header (dimensions, has-nulls flag, element type, length, lower bound), then each element as
# its length and big-endian value, or length -1 for NULL.
_ARRAY_HEADER = struct.Struct(">iiIii")
_NULL_ELEMENT = struct.pack(">i", -1)
_PACKED = {"float8": "d", "int8": "q"}  # struct codes of 8-byte values
_PACKED_ELEMENT = {kind: struct.Struct(f">i{code}") for kind, code in _PACKED.items()}
_LENGTH = struct.Struct(">i")  # a bytea element's length, before its bytes


class _Float8Array(bytes):
    """A float8[] value in binary format (``packed_array``)."""


class _Int8Array(bytes):
    """An int8[] value in binary format (``packed_array``)."""


class _PackedDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Buffer) -> Buffer:
        return obj


class _Float8ArrayDumper(_PackedDumper):
    oid = postgres.types["float8"].array_oid


class _Int8ArrayDumper(_PackedDumper):
    oid = postgres.types["int8"].array_oid


class _ByteaArray(bytes):
    """A bytea[] value in binary format (``packed_bytea``)."""


class _ByteaArrayDumper(_PackedDumper):
    oid = postgres.types["bytea"].array_oid


_PACKED_CLASSES: dict[str, type[bytes]] = {"float8": _Float8Array, "int8": _Int8Array}


def register_packed_dumpers(adapters: AdaptersMap) -> None:
    """Let ``adapters`` (a cursor's or a connection's) send ``packed_array`` and
    ``packed_bytea`` values as the arrays they are: registered per cursor (~10 us), so no
    connection depends on import order."""
    adapters.register_dumper(_Float8Array, _Float8ArrayDumper)
    adapters.register_dumper(_Int8Array, _Int8ArrayDumper)
    adapters.register_dumper(_ByteaArray, _ByteaArrayDumper)


def insert_columns_once(
    session: ScopedSession,
    table: Table,
    *,
    claim: Table,
    claim_values: Mapping[str, Any],
    constants: Mapping[str, Any],
    arrays: Mapping[str, Sequence[Any]],
    ordinal: str,
) -> int:
    """Insert the ``claim`` row (column -> value) and, only if its key was not already stored,
    one row of ``table`` per element of the ``arrays`` (column -> values, all the same length):
    each row also takes the ``constants`` (column -> value) and its position from 0 in the
    ``ordinal`` column. Returns the number of rows inserted: all of them, or none when the
    claim was there before (a re-sent batch).

    One statement: the claim's ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` in a CTE, the rows
    only ``WHERE EXISTS`` what it returned, so a writer racing the same claim waits on the
    first's uncommitted key and then inserts nothing (or everything, if the first rolled back).
    Both are the application role's plain INSERTs, in the caller's tenant-scoped transaction,
    so row-level security's WITH CHECK applies to every row. JSON columns take encoded JSON
    text. A value the database refuses (NUL in text, an over-long string) raises SQLAlchemy's
    ``DataError``, as the ORM path does.
    """
    lengths = {len(values) for values in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns of unequal length: {sorted(lengths)}")
    if not lengths.pop():
        return 0
    params: list[Any] = [*claim_values.values(), *constants.values()]
    joined: list[bool] = []
    for name, values in arrays.items():
        param = column_parameter(_array_type(table, name), values)
        joined.append(isinstance(param, str))
        params.append(param)
    sql = _claimed_unnest_insert(
        table, claim, tuple(claim_values), tuple(constants), tuple(arrays), tuple(joined), ordinal
    )
    raw: psycopg.Connection[Any] = session.connection().connection.driver_connection  # type: ignore[assignment]
    try:
        with raw.cursor() as cur:
            register_packed_dumpers(cur.adapters)
            cur.execute(sql, params)
            return max(cur.rowcount, 0)
    except psycopg.DataError as exc:
        raise DataError(sql, None, exc) from exc


def column_parameter(kind: str, values: Sequence[Any]) -> Any:
    """How one column's ``values`` (PostgreSQL element type ``kind``) travel: text joined into
    one string (``joined_text``), numbers and bytes packed (``packed_array``,
    ``packed_bytea``), or, where neither can carry them exactly, the list itself for psycopg
    to dump."""
    if kind == "text":
        text = joined_text(values)
        return values if text is None else text
    if kind in _PACKED:
        packed = packed_array(kind, values)
        return values if packed is None else packed
    if kind == "bytea":
        packed = packed_bytea(values)
        return values if packed is None else packed
    return values


def joined_text(values: Sequence[Any]) -> str | None:
    """``values`` (text or None) as one string that ``string_to_array(s, US, RS)`` splits back
    into exactly them; None when it cannot (a value holds a separator, or is not text)."""
    nulls = values.count(None)
    try:
        joined = _SEPARATOR.join([_NULL if v is None else v for v in values] if nulls else values)
    except TypeError:  # not all text: psycopg dumps (or refuses) them as before
        return None
    # Every separator and NULL mark must be one this join wrote. An empty result would split
    # into no element at all (the one value "").
    if not joined or joined.count(_SEPARATOR) != len(values) - 1 or joined.count(_NULL) != nulls:
        return None
    return joined


def packed_array(kind: str, values: Sequence[Any]) -> bytes | None:
    """``values`` (numbers or None) as a binary ``kind[]`` value; None when ``struct`` cannot
    pack one exactly (out of range, not a number), so psycopg dumps (or refuses) them."""
    code = _PACKED[kind]
    n = len(values)
    nulls = values.count(None)
    header = _ARRAY_HEADER.pack(1, 1 if nulls else 0, postgres.types[kind].oid, n, 1)
    try:
        if nulls:
            element = _PACKED_ELEMENT[kind]
            body = b"".join([_NULL_ELEMENT if v is None else element.pack(8, v) for v in values])
        else:  # one pack call over (length, value) pairs
            pairs: list[Any] = [8] * (2 * n)
            pairs[1::2] = values
            body = struct.pack(f">{f'i{code}' * n}", *pairs)
    except struct.error:
        return None
    return _PACKED_CLASSES[kind](header + body)


def packed_bytea(values: Sequence[Any]) -> bytes | None:
    """``values`` (bytes or None) as a binary ``bytea[]`` value; None when one is neither, so
    psycopg dumps (or refuses) them."""
    nulls = values.count(None)
    header = _ARRAY_HEADER.pack(1, 1 if nulls else 0, postgres.types["bytea"].oid, len(values), 1)
    length = _LENGTH.pack
    try:
        body = b"".join([_NULL_ELEMENT if v is None else length(len(v)) + v for v in values])
    except TypeError:  # not bytes
        return None
    return _ByteaArray(header + body)


@lru_cache(maxsize=64)
def _claimed_unnest_insert(
    table: Table,
    claim: Table,
    claimed: tuple[str, ...],
    constants: tuple[str, ...],
    arrays: tuple[str, ...],
    joined: tuple[bool, ...],
    ordinal: str,
) -> str:
    """``WITH claim AS (INSERT claim ... ON CONFLICT DO NOTHING RETURNING 1) INSERT ... SELECT
    consts, ordinality - 1, u.* FROM unnest(arrays) WHERE EXISTS (SELECT FROM claim)``, built
    once per shape (which text columns travel joined): the same text each batch, which psycopg
    prepares on the server after a few executions."""
    unknown = {ordinal} - set(table.c.keys()) | set(claimed) - set(claim.c.keys())
    if unknown:  # only the tables' own column names go into the statement's text (the
        raise KeyError(f"not columns: {sorted(unknown)}")  # others are looked up below)
    claim_values = ", ".join(f"%b::{_array_type(claim, c)}" for c in claimed)
    selected = [f"%b::{_array_type(table, c)}" for c in constants]
    selected.append("u.ordinality - 1")
    # JSON columns are JSONB on PostgreSQL (events.models.DOCUMENT); text has no assignment
    # cast to it. Other columns take PostgreSQL's assignment casts (text to VARCHAR(n) refuses
    # an over-long value, where an explicit cast would cut it).
    selected.extend(f"u.{c}::jsonb" if _is_json(table, c) else f"u.{c}" for c in arrays)
    params = ", ".join(
        _SPLIT if split else f"%b::{_array_type(table, c)}[]"
        for c, split in zip(arrays, joined, strict=True)
    )
    names = ", ".join([*constants, ordinal, *arrays])
    return (
        f"WITH claim AS (INSERT INTO {claim.name} ({', '.join(claimed)})"  # noqa: S608 (column names)
        f" VALUES ({claim_values}) ON CONFLICT DO NOTHING RETURNING 1)"
        f" INSERT INTO {table.name} ({names}) SELECT {', '.join(selected)}"
        f" FROM unnest({params}) WITH ORDINALITY AS u({', '.join(arrays)}, ordinality)"
        " WHERE EXISTS (SELECT FROM claim)"
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
