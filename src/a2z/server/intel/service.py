"""Stored indicators and warning lists: import, list, delete, versions, and what changed.

One set of functions serves the tenant's tables and the global ones, through ``Scope``. Every
change takes the owner's next intel version (its state row locked for the transaction on
PostgreSQL), stamps the rows it touches with it, and purges tombstones older than
``TOMBSTONE_VERSIONS`` versions.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from a2z.rules.intel import Indicator, IndicatorKey, IndicatorType, InvalidIndicator
from a2z.rules.intel.indicators import normalise_domain
from a2z.server.intel.models import (
    SOURCE_MAX,
    TOMBSTONE_VERSIONS,
    VALUE_MAX,
    GlobalIndicator,
    GlobalIntelState,
    GlobalWarning,
    TenantIndicator,
    TenantIntelState,
    TenantWarning,
    WarningKind,
)
from a2z.server.store.base import utcnow
from a2z.server.store.pagination import Page, paginate
from a2z.server.store.session import ScopedSession

GLOBAL_PREFIX = "global:"  # the source of a global indicator as matched and alerted

IndicatorRow = TenantIndicator | GlobalIndicator
WarningRow = TenantWarning | GlobalWarning
StateRow = TenantIntelState | GlobalIntelState
Ind = TypeVar("Ind", TenantIndicator, GlobalIndicator)
W = TypeVar("W", TenantWarning, GlobalWarning)


@dataclass(frozen=True)
class Scope(Generic[Ind, W]):
    """Whose intel: the session's tenant or the global set."""

    indicators: type[Ind]
    warnings: type[W]
    is_global: bool

    def state(self, session: ScopedSession, *, lock: bool = False) -> StateRow:
        """The owner's state row; version 0 (not stored) before its first change.

        ``lock`` (for a change) creates the row if needed and holds it for the transaction,
        so concurrent changes of one owner take consecutive versions.
        """
        model: type[StateRow] = GlobalIntelState if self.is_global else TenantIntelState
        dialect = session.get_bind().dialect.name
        if lock:
            values: dict[str, object] = {"version": 0, "floor": 0}
            values.update({"id": 1} if self.is_global else {"tenant_id": session.tenant_id})
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            session.execute(insert(model).values(**values).on_conflict_do_nothing())
        stmt = select(model)
        if lock and dialect == "postgresql":
            stmt = stmt.with_for_update()
        found = session.scalars(stmt).first()
        if isinstance(found, GlobalIntelState | TenantIntelState):
            return found
        row: StateRow = GlobalIntelState(id=1) if self.is_global else TenantIntelState()
        row.version, row.floor = 0, 0
        return row

    def source(self, stored: str) -> str:
        """The source as matched: global indicators say so, and never collide with a tenant's."""
        return GLOBAL_PREFIX + stored if self.is_global else stored


TENANT: Scope[TenantIndicator, TenantWarning] = Scope(TenantIndicator, TenantWarning, False)
GLOBAL: Scope[GlobalIndicator, GlobalWarning] = Scope(GlobalIndicator, GlobalWarning, True)


def bump(session: ScopedSession, scope: Scope[Ind, W]) -> int:
    """The owner's next version, taken for this transaction; old tombstones are purged."""
    state = scope.state(session, lock=True)
    state.version += 1
    horizon = state.version - TOMBSTONE_VERSIONS
    if horizon > state.floor:
        model = scope.indicators
        session.execute(
            delete(model)
            .where(model.removed_version.is_not(None), model.removed_version <= horizon)
            .execution_options(synchronize_session=False)
        )
        state.floor = horizon
    return state.version


# -- import ------------------------------------------------------------------------------------


@dataclass
class ImportCounts:
    """What an import changed."""

    added: int = 0  # new indicators (or deleted ones back)
    updated: int = 0  # confidence, expiry or reference changed
    unchanged: int = 0  # already there as given (last_seen moved on)
    too_long: int = 0  # values over VALUE_MAX characters, refused
    version: int = 0  # the owner's intel version after the import


def _epoch(at: datetime | None) -> float | None:
    return at.timestamp() if at is not None else None


def _stamp(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def import_indicators(
    session: ScopedSession, scope: Scope[Ind, W], indicators: Sequence[Indicator]
) -> ImportCounts:
    """Add or refresh ``indicators`` (identity: type, value, source) at one new version."""
    counts = ImportCounts()
    wanted: dict[tuple[str, str, str], Indicator] = {}
    for indicator in indicators:
        if len(indicator.value) > VALUE_MAX:
            counts.too_long += 1
            continue
        wanted[(indicator.type.value, indicator.value, indicator.source)] = indicator
    version = bump(session, scope)
    counts.version = version
    model = scope.indicators
    sources = sorted({key[2] for key in wanted})
    existing: dict[tuple[str, str, str], Ind] = {}
    for start in range(0, len(sources), 500):
        rows = session.scalars(select(model).where(model.source.in_(sources[start : start + 500])))
        for row in rows:
            existing[(row.type, row.value, row.source)] = row
    now = utcnow()
    fresh: list[dict[str, object]] = []
    owner = {} if scope.is_global else {"tenant_id": session.tenant_id}
    for key, indicator in wanted.items():
        expires = _stamp(indicator.expires)
        row = existing.get(key)  # type: ignore[assignment]  # mypy: the loop variable above
        if row is None:
            fresh.append(
                {
                    **owner, "id": uuid.uuid4(), "type": key[0], "value": key[1],
                    "source": key[2], "confidence": indicator.confidence,
                    "expires_at": expires, "ref": indicator.ref, "first_seen": now,
                    "last_seen": now, "version": version, "removed_version": None,
                }
            )  # fmt: skip
            counts.added += 1
            continue
        row.last_seen = now
        same = (row.confidence, _epoch(row.expires_at), row.ref) == (
            indicator.confidence, indicator.expires, indicator.ref,
        )  # fmt: skip
        if row.removed_version is not None:
            counts.added += 1
        elif same:
            counts.unchanged += 1
            continue
        else:
            counts.updated += 1
        row.confidence, row.expires_at, row.ref = indicator.confidence, expires, indicator.ref
        row.removed_version, row.version = None, version
    # New rows go in as one executemany (SQLAlchemy's "insertmanyvalues" batches): the ORM's
    # unit of work took minutes for a million rows. tenant_id is set explicitly (no flush hook
    # runs here) and PostgreSQL's WITH CHECK still refuses another tenant's.
    for start in range(0, len(fresh), 10_000):
        session.execute(insert(model), fresh[start : start + 10_000])
    return counts


# -- reading -----------------------------------------------------------------------------------


def get(session: ScopedSession, scope: Scope[Ind, W], indicator_id: uuid.UUID) -> Ind | None:
    """One live indicator (not deleted) by id."""
    model = scope.indicators
    return session.scalars(
        select(model).where(model.id == indicator_id, model.removed_version.is_(None))
    ).first()


def list_page(
    session: ScopedSession,
    scope: Scope[Ind, W],
    *,
    limit: int,
    cursor: str | None,
    kind: IndicatorType | None = None,
    prefix: str | None = None,
    source: str | None = None,
) -> Page[Ind]:
    """Live indicators, oldest first, filtered by type, value prefix and source."""
    model = scope.indicators
    stmt: Select[Ind] = select(model).where(model.removed_version.is_(None))
    if kind is not None:
        stmt = stmt.where(model.type == kind.value)
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(model.value.like(escaped + "%", escape="\\"))
    if source is not None:
        stmt = stmt.where(model.source == source)
    return paginate(session, stmt, at=model.first_seen, row_id=model.id, limit=limit, cursor=cursor)


@dataclass
class Stats:
    """Counts and versions of one owner's intel."""

    version: int
    floor: int
    total: int
    expired: int
    by_type: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    warnings: int = 0


def stats(session: ScopedSession, scope: Scope[Ind, W]) -> Stats:
    """Live indicators by type and source, how many have expired, and the version."""
    model = scope.indicators
    live = model.removed_version.is_(None)
    state = scope.state(session)
    by_type = dict(
        session.execute(select(model.type, func.count()).where(live).group_by(model.type)).all()
    )
    by_source = dict(
        session.execute(select(model.source, func.count()).where(live).group_by(model.source)).all()
    )
    expired = session.scalar(
        select(func.count()).select_from(model).where(live, model.expires_at <= utcnow())
    )
    warnings = session.scalar(select(func.count()).select_from(scope.warnings))
    return Stats(
        version=state.version, floor=state.floor, total=sum(by_type.values()),
        expired=expired or 0, by_type=by_type, by_source=by_source, warnings=warnings or 0,
    )  # fmt: skip


# -- deleting ----------------------------------------------------------------------------------


def remove(session: ScopedSession, scope: Scope[Ind, W], row: IndicatorRow) -> int:
    """Delete one indicator (a tombstone: agents learn of it in their next delta)."""
    version = bump(session, scope)
    row.removed_version = row.version = version
    return version


def remove_source(session: ScopedSession, scope: Scope[Ind, W], source: str) -> tuple[int, int]:
    """Delete every live indicator of ``source``; (how many, the new version)."""
    model = scope.indicators
    live = (model.source == source, model.removed_version.is_(None))
    count = session.scalar(select(func.count()).select_from(model).where(*live)) or 0
    if count == 0:
        return 0, scope.state(session).version
    version = bump(session, scope)
    session.execute(
        update(model)
        .where(*live)
        .values(removed_version=version, version=version)
        .execution_options(synchronize_session=False)
    )
    return count, version


# -- changes, for the detect role and the agents ----------------------------------------------


def _columns(model: type[IndicatorRow]) -> tuple[Any, ...]:
    return (
        model.type, model.value, model.source, model.confidence, model.expires_at, model.ref,
        model.removed_version,
    )  # fmt: skip


def _indicator(scope: Scope[Ind, W], row: Any) -> Indicator:
    # Plain column tuples, not ORM objects: loading a million entities took 10x longer.
    kind, value, source, confidence, expires_at, ref, _ = row
    return Indicator(
        IndicatorType(kind), value, scope.source(source), confidence, _epoch(expires_at), ref
    )


def snapshot(session: ScopedSession, scope: Scope[Ind, W]) -> list[Indicator]:
    """Every live indicator that has not expired."""
    model = scope.indicators
    now = utcnow()
    rows = session.execute(
        select(*_columns(model)).where(
            model.removed_version.is_(None),
            (model.expires_at.is_(None)) | (model.expires_at > now),
        )
    )
    return [_indicator(scope, row) for row in rows]


def changes(
    session: ScopedSession, scope: Scope[Ind, W], since: int
) -> tuple[list[Indicator], list[IndicatorKey]]:
    """What changed after version ``since``: indicators added or changed, and those removed."""
    model = scope.indicators
    added: list[Indicator] = []
    removed: list[IndicatorKey] = []
    for row in session.execute(select(*_columns(model)).where(model.version > since)):
        if row[-1] is None:
            added.append(_indicator(scope, row))
        else:
            removed.append(IndicatorKey(IndicatorType(row[0]), row[1], scope.source(row[2])))
    return added, removed


# -- warning lists -----------------------------------------------------------------------------


class InvalidWarning(ValueError):
    """A warning-list value that is not of its kind."""


def normalise_warning(kind: WarningKind, raw: str) -> str:
    """The stored form of a warning-list value; InvalidWarning if it is not one."""
    text = raw.strip()
    try:
        if kind is WarningKind.CIDR:
            return str(ipaddress.ip_network(text, strict=False))
        if kind is WarningKind.DOMAIN:
            return normalise_domain(text)
    except (ValueError, InvalidIndicator) as exc:
        raise InvalidWarning(f"not a {kind.value}: {raw!r}") from exc
    if not text or len(text) > VALUE_MAX:
        raise InvalidWarning(f"a value must have 1 to {VALUE_MAX} characters")
    return text.lower()


def add_warning(
    session: ScopedSession, scope: Scope[Ind, W], *, kind: WarningKind, value: str, note: str,
    actor: str,
) -> W | None:  # fmt: skip
    """Add an entry (None if it is already there); agents get the list at the next version."""
    model = scope.warnings
    normal = normalise_warning(kind, value)
    if session.scalars(
        select(model).where(model.kind == kind.value, model.value == normal)
    ).first():
        return None
    bump(session, scope)
    row = model(kind=kind.value, value=normal, note=note, created_by=actor, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def get_warning(session: ScopedSession, scope: Scope[Ind, W], warning_id: uuid.UUID) -> W | None:
    """One entry by id."""
    model = scope.warnings
    return session.scalars(select(model).where(model.id == warning_id)).first()


def list_warnings(
    session: ScopedSession, scope: Scope[Ind, W], *, limit: int, cursor: str | None
) -> Page[W]:
    """Entries, oldest first."""
    model = scope.warnings
    return paginate(
        session, select(model), at=model.created_at, row_id=model.id, limit=limit, cursor=cursor
    )


def remove_warning(session: ScopedSession, scope: Scope[Ind, W], row: WarningRow) -> None:
    """Delete an entry (warning lists are small and sent whole: no tombstone)."""
    bump(session, scope)
    session.delete(row)


def warning_values(session: ScopedSession, scope: Scope[Ind, W]) -> dict[WarningKind, list[str]]:
    """The whole list, by kind."""
    model = scope.warnings
    out: dict[WarningKind, list[str]] = {kind: [] for kind in WarningKind}
    for kind, value in session.execute(select(model.kind, model.value).order_by(model.value)):
        out[WarningKind(kind)].append(value)
    return out


def count_types(indicators: Iterable[Indicator]) -> Counter[str]:
    """Indicators by type (for import summaries)."""
    return Counter(i.type.value for i in indicators)


def clip_source(source: str) -> str:
    """Sources are keys: refuse nothing, but cut to the column's width."""
    return source[:SOURCE_MAX]
