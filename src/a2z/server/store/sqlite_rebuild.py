"""Rebuilding a SQLite table from its own stored definition, for migrations that change what
SQLite cannot alter in place (a primary key, a column's declared type)."""

from __future__ import annotations

from collections.abc import Callable

from alembic import op


def rebuild_sqlite_table(table: str, definition: Callable[[str], str]) -> None:
    """``table`` again as ``definition(its CREATE TABLE statement)``: the rows copied, its
    indexes created again from their stored SQL. Run inside a migration (``op``)."""
    bind = op.get_bind()
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    index_sql = list(
        bind.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        )
    )
    body = definition(table_sql)
    for name, _ in index_sql:
        op.execute(f"DROP INDEX {name}")
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_rebuilt")
    op.execute(body)
    op.execute(f"INSERT INTO {table} SELECT * FROM {table}_rebuilt")  # noqa: S608 (a table name)
    op.execute(f"DROP TABLE {table}_rebuilt")
    for _, sql in index_sql:
        op.execute(sql)
