"""Alembic migrations: run on SQLite and PostgreSQL, from empty and from every revision."""
