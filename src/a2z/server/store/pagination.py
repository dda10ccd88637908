"""Keyset pagination over ``(created_at, id)``: stable under inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, Select, and_, or_

from a2z.server.errors import A2ZServerError
from a2z.server.store.session import ScopedSession

T = TypeVar("T")


class BadCursor(A2ZServerError):
    """The cursor is not one this API issued."""

    status = 400
    title = "Bad cursor"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page and the opaque cursor of the next (None at the end)."""

    items: list[T]
    next_cursor: str | None


def _encode(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def _decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor is malformed") from exc


def paginate(
    session: ScopedSession,
    stmt: Select[T],
    *,
    at: Any,
    row_id: Any,
    limit: int,
    cursor: str | None,
) -> Page[T]:
    """Run ``stmt`` ordered by ``(at, row_id)`` ascending, one page after ``cursor``."""
    rows = list(session.scalars(_ordered(stmt, at, row_id, limit, cursor)))
    return _cut(rows, at, row_id, limit)


def paginate_rows(
    session: ScopedSession,
    stmt: Select[Any],
    *,
    at: Any,
    row_id: Any,
    limit: int,
    cursor: str | None,
) -> Page[Row[Any]]:
    """As ``paginate`` for a select of columns (which must include ``at`` and ``row_id``): the
    page as rows, without building an ORM object per row (a tenth of a list read's CPU)."""
    rows = list(session.execute(_ordered(stmt, at, row_id, limit, cursor)).all())
    return _cut(rows, at, row_id, limit)


def _ordered(
    stmt: Select[Any], at: Any, row_id: Any, limit: int, cursor: str | None
) -> Select[Any]:
    if cursor:
        after_at, after_id = _decode(cursor)
        stmt = stmt.where(or_(at > after_at, and_(at == after_at, row_id > after_id)))
    return stmt.order_by(at, row_id).limit(limit + 1)


def _cut(rows: list[T], at: Any, row_id: Any, limit: int) -> Page[T]:
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], _encode(getattr(last, at.key), getattr(last, row_id.key)))
