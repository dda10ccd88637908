"""Anomaly scores of conn records: written in bulk by the detect role, read by event search."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import Insert, Table, delete, insert, select

from a2z.server.events.models import AnomalyScore
from a2z.server.events.service import COPY_MIN_ROWS
from a2z.server.store import bulk
from a2z.server.store.session import ScopedSession

_SCORES = cast(Table, AnomalyScore.__table__)


def store(*, session: ScopedSession, scores: Sequence[tuple[str, float, float]]) -> None:
    """Store ``(uid, ts, score)`` triples of the session's tenant in bulk (COPY on PostgreSQL,
    as ingest writes events); a uid already scored (a redelivered batch) keeps its first
    score."""
    if not scores:
        return
    rows = [
        {"tenant_id": session.tenant_id, "uid": uid[:64], "ts": ts, "score": score}
        for uid, ts, score in scores
    ]
    if session.get_bind().dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        bulk.copy_insert_ignoring_duplicates(session, _SCORES, rows, returning="uid")
    else:
        session.execute(_insert_ignoring_duplicates(session), rows)


def of(*, session: ScopedSession, uids: Collection[str]) -> dict[str, float]:
    """The stored scores of these uids (those never scored are absent)."""
    if not uids:
        return {}
    stmt = select(AnomalyScore.uid, AnomalyScore.score).where(AnomalyScore.uid.in_(uids))
    return {uid: score for uid, score in session.execute(stmt)}


def forget_before(*, session: ScopedSession, ts: float) -> int:
    """Delete the tenant's scores of connections older than ``ts`` (retention)."""
    result: Any = session.execute(delete(AnomalyScore).where(AnomalyScore.ts < ts))
    return int(getattr(result, "rowcount", 0) or 0)


def _insert_ignoring_duplicates(session: ScopedSession) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(AnomalyScore).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(AnomalyScore).on_conflict_do_nothing()
    return insert(AnomalyScore)
