"""``events.orig_ip`` and ``resp_ip`` hold the address's 16 bytes, not 32 hex digits (ADR 0028).

The key of an address search (``search.ip_key``: IPv4 mapped into ``::ffff:0:0/96``) was text of
32 hex digits, compared under the database's collation; it is now the same value as 16 bytes
(``bytea`` on PostgreSQL, ``BLOB`` on SQLite), compared byte by byte on both, in the same order,
so a CIDR block is still one indexed range. Every ingested row enters both indexes: the keys
are half as wide and cheaper to compare.

PostgreSQL rewrites ``events`` (every partition) and rebuilds the two indexes. SQLite cannot
change a column's type in place: the values are converted, then ``events`` is rebuilt from its
own definition with the columns declared ``BLOB`` (the rows copied, the indexes created again).

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29 10:30:00
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from alembic import op

from a2z.server.store.sqlite_rebuild import rebuild_sqlite_table

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

COLUMNS = ("orig_ip", "resp_ip")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE events "
            + ", ".join(f"ALTER COLUMN {c} TYPE bytea USING decode({c}, 'hex')" for c in COLUMNS)
        )
        return
    _convert_sqlite("a2z_unhex", _unhex)
    _redeclare_sqlite("BLOB")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE events "
            + ", ".join(
                f"ALTER COLUMN {c} TYPE varchar(32) USING encode({c}, 'hex')" for c in COLUMNS
            )
        )
        return
    _convert_sqlite("a2z_hex", _hex)
    _redeclare_sqlite("VARCHAR(32)")


def _unhex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _convert_sqlite(name: str, function: Callable[[Any], Any]) -> None:
    """Every value of ``COLUMNS`` through ``function``, registered on this connection."""
    bind = op.get_bind()
    bind.connection.driver_connection.create_function(  # type: ignore[union-attr]
        name, 1, function, deterministic=True
    )
    assignments = ", ".join(f"{c} = {name}({c})" for c in COLUMNS)
    op.execute(f"UPDATE events SET {assignments}")  # noqa: S608 (this file's constants)


def _redeclare_sqlite(declared: str) -> None:
    """``events`` again from its stored definition with ``COLUMNS`` declared ``declared``."""

    def definition(table_sql: str) -> str:
        body = table_sql
        for column in COLUMNS:
            body, found = re.subn(rf"\b{column} [A-Z]+(\(\d+\))?", f"{column} {declared}", body)
            if found != 1:
                raise RuntimeError(f"events.{column} not found once in {table_sql!r}")
        return body

    rebuild_sqlite_table("events", definition)
