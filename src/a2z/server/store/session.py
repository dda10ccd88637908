"""The one session factory: every query on tenant-owned rows is scoped to one tenant.

SQLAlchemy's ``do_orm_execute`` hook adds ``tenant_id = :tenant`` to every ORM statement on a
``TenantOwned`` model (selects, updates, deletes, relationship loads), and ``before_flush``
refuses a row written for another tenant. A query issued without a tenant raises instead of
returning everyone's rows. On PostgreSQL each transaction also sets ``app.tenant_id`` for the
row-level security policies, so the database enforces the same scope underneath.

Rows of no tenant that every tenant reads and only operators change (``OperatorManaged``:
global intel) are written only in a session opened for it (``tenant(..., global_intel=True)``),
which on PostgreSQL also sets ``app.global_intel`` for their write policy.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from a2z.server.errors import TenantScopeError
from a2z.server.store.base import OperatorManaged, TenantOwned
from a2z.server.store.tenancy import GLOBAL_INTEL_SETTING, TENANT_SETTING, USER_SETTING

_TENANT = "tenant_id"
_SYSTEM = "system"
_GLOBAL_INTEL = "global_intel"  # this session may change OperatorManaged rows
_TURNS = "tenant_turns"  # the tenants a tenants_in_turn transaction has been scoped to
_TOUCHED = "watched_change"  # set when this transaction changed a watched model
_WROTE = "wrote"  # set when this transaction may have written rows a tenant's pages show
CLOSE_WAIT_S = 5.0  # longest a closing factory waits for its connections to be given back


class ScopedSession(Session):
    """A session that knows its tenant (or that it is a system session for control-plane work)."""

    @property
    def tenant_id(self) -> uuid.UUID:
        """The tenant this session is scoped to; raises for a system session."""
        tid = self.info.get(_TENANT)
        if not isinstance(tid, uuid.UUID):
            raise TenantScopeError("session has no tenant in scope")
        return tid

    def connection(self, *args: Any, **kwargs: Any) -> Connection:
        """The transaction's connection, for statements run past the ORM (``store/bulk.py``,
        ingest's single-statement updates). Taking it counts as a write (``note_write``): what
        goes around the ORM cannot be seen, so it is assumed to change rows. The ORM itself never
        calls this method (it reaches the connection through its transaction)."""
        note_write(self)
        return super().connection(*args, **kwargs)

    def read_connection(self) -> Connection:
        """The transaction's connection, for reads (and scope settings) past the ORM: not
        counted as a write. A hot path's select runs here without the ORM's statement hooks and
        compilation, which cost more than the round trip."""
        return super().connection()


def note_write(session: Session) -> None:
    """Record that ``session``'s transaction may change rows a tenant's cached pages show: after
    it commits, the factory's ``watch_writes`` callbacks run (page_cache.py). The session factory
    notes ORM flushes and DML statements by itself; call this for anything else."""
    session.info[_WROTE] = True


class OperatorRowsError(TenantScopeError):
    """Global intel written in a session not opened to change it."""

    def __init__(self) -> None:
        super().__init__("global intel is changed only in a session opened for it")


@event.listens_for(ScopedSession, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    if state.is_column_load:
        return
    if (state.is_insert or state.is_update or state.is_delete) and not state.session.info.get(
        _GLOBAL_INTEL
    ):
        mapper = state.bind_mapper
        if mapper is not None and issubclass(mapper.class_, OperatorManaged):
            raise OperatorRowsError()
    tid = state.session.info.get(_TENANT)
    if tid is None:
        if state.session.info.get(_SYSTEM):
            return
        raise TenantScopeError("tenant-owned query without a tenant in scope")
    state.statement = state.statement.options(
        with_loader_criteria(
            TenantOwned,
            lambda cls: cls.tenant_id == tid,
            include_aliases=True,
        )
    )


@event.listens_for(ScopedSession, "before_flush")
def _check_writes(session: Session, _ctx: Any, _instances: Any) -> None:
    if not session.info.get(_GLOBAL_INTEL) and any(
        isinstance(obj, OperatorManaged) for obj in (*session.new, *session.dirty, *session.deleted)
    ):
        raise OperatorRowsError()
    tid = session.info.get(_TENANT)
    if tid is None:
        return
    for obj in [*session.new, *session.dirty]:
        if not isinstance(obj, TenantOwned):
            continue
        owner: uuid.UUID | None = obj.tenant_id  # None until set: the column is not yet filled
        if owner is None:
            obj.tenant_id = tid
        elif owner != tid:
            raise TenantScopeError("refusing to write a row that belongs to another tenant")


@dataclass(frozen=True, slots=True)
class Watch:
    """Call ``notify`` after a commit that updated or deleted a row of ``models``.

    Changes only to ``ignore`` columns do not count (bookkeeping such as a last-used time).
    Inserts never count: a new row cannot invalidate what was read before it existed.
    """

    models: tuple[type[Any], ...]
    notify: Callable[[], None]
    ignore: frozenset[str] = frozenset()

    def covers(self, obj: object) -> bool:
        return isinstance(obj, self.models)

    def changed(self, obj: object) -> bool:
        """True when a dirty ``obj`` has a change in a column outside ``ignore``."""
        state = inspect(obj)
        return any(
            attr.history.has_changes() for attr in state.attrs if attr.key not in self.ignore
        )


def _tenant_rows(state: ORMExecuteState) -> bool:
    """Whether a DML statement may write tenant-owned rows (True when its table is unknown)."""
    mapper = state.bind_mapper
    if mapper is not None:
        return issubclass(mapper.class_, TenantOwned)
    table = getattr(state.statement, "table", None)
    columns = getattr(table, "c", None)
    return columns is None or _TENANT in columns


class SessionFactory:
    """Opens units of work; the only way the server reaches the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._make = sessionmaker(bind=engine, class_=ScopedSession, expire_on_commit=False)
        self._postgres = engine.dialect.name == "postgresql"
        self._watches: list[Watch] = []
        self._write_watches: list[Callable[[uuid.UUID | None], None]] = []
        # Listeners on this factory's sessionmaker only: factories (tests run several) do not
        # notify each other.
        event.listen(self._make, "before_flush", self._note_changes)
        event.listen(self._make, "do_orm_execute", self._note_bulk_changes)
        event.listen(self._make, "after_commit", self._notify)
        event.listen(self._make, "after_rollback", self._forget)

    def watch(
        self,
        models: Iterable[type[Any]],
        notify: Callable[[], None],
        *,
        ignore: Iterable[str] = (),
    ) -> None:
        """Call ``notify()`` after each commit that changed a row of ``models`` (see Watch).

        It runs synchronously after the commit, before the unit of work returns to its
        caller: whatever the caller answers next already sees the notification's effect.
        """
        self._watches.append(Watch(tuple(models), notify, frozenset(ignore)))

    def watch_writes(self, notify: Callable[[uuid.UUID | None], None]) -> None:
        """Call ``notify(tenant_id)`` after each commit that may have written the tenant's rows.

        Any write counts, whatever the table (a tenant's pages may show it, now or once a page
        is added): an ORM flush with anything new, changed or deleted, an insert, update or
        delete statement, or raw work on the connection (``note_write``). A system transaction
        that writes a tenant-owned table (or works on the connection) notifies ``None``: every
        tenant. Like ``watch``, it runs after the commit and before the unit of work returns, so
        whatever the writer answers next is already visible to readers that check.
        """
        self._write_watches.append(notify)

    def _note_changes(self, session: Session, _ctx: Any, _instances: Any) -> None:
        if self._write_watches and not session.info.get(_WROTE):
            changed = [*session.new, *session.dirty, *session.deleted]
            if session.info.get(_TENANT) is not None:
                if changed:
                    session.info[_WROTE] = True
            elif any(isinstance(o, TenantOwned) for o in changed):
                session.info[_WROTE] = True
        for watch in self._watches:
            if any(watch.covers(o) for o in session.deleted) or any(
                watch.covers(o) and watch.changed(o) for o in session.dirty
            ):
                session.info.setdefault(_TOUCHED, set()).add(id(watch))

    def _note_bulk_changes(self, state: ORMExecuteState) -> None:
        dml = state.is_insert or state.is_update or state.is_delete
        if (
            self._write_watches
            and dml
            and (state.session.info.get(_TENANT) is not None or _tenant_rows(state))
        ):
            state.session.info[_WROTE] = True
        # update(Model)/delete(Model) statements skip the unit of work's flush.
        if not (state.is_update or state.is_delete):
            return
        mapper = state.bind_mapper
        target = mapper.class_ if mapper is not None else None
        for watch in self._watches:
            if target is not None and issubclass(target, watch.models):
                state.session.info.setdefault(_TOUCHED, set()).add(id(watch))

    def _notify(self, session: Session) -> None:
        if session.info.pop(_WROTE, False):
            turns: set[uuid.UUID] | None = session.info.get(_TURNS)
            tenant = session.info.get(_TENANT)
            written = sorted(turns) if turns is not None else [tenant]
            for notify_write in self._write_watches:
                for each in written:
                    notify_write(each if isinstance(each, uuid.UUID) else None)
        touched = session.info.pop(_TOUCHED, None)
        if not touched:
            return
        for watch in self._watches:
            if id(watch) in touched:
                watch.notify()

    def _forget(self, session: Session) -> None:
        session.info.pop(_TOUCHED, None)
        session.info.pop(_WROTE, None)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Close the pool's connections, once the threads using them have given them back.

        A server shutting down cancels its tasks, but a task cancelled while awaiting
        ``asyncio.to_thread`` leaves its thread running, still holding a connection. Disposed
        under it, that connection would be returned to a pool nobody closes, and left to the
        garbage collector (an unclosed connection until then). So wait, bounded, for the
        checked-out count to reach zero first.
        """
        checked_out = getattr(self.engine.pool, "checkedout", None)
        deadline = time.monotonic() + wait_s
        while checked_out is not None and checked_out() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.engine.dispose()

    @contextmanager
    def tenant(
        self, tenant_id: uuid.UUID, *, global_intel: bool = False
    ) -> Iterator[ScopedSession]:
        """A transaction scoped to one tenant; commits on success, rolls back on error.

        ``global_intel``: it may also change global intel (operators' routes only; the caller
        has checked the operator's permission).
        """
        with self._make() as session:
            session.info[_TENANT] = tenant_id
            if global_intel:
                session.info[_GLOBAL_INTEL] = True
            with session.begin():
                self._set(session, TENANT_SETTING, str(tenant_id))
                if global_intel:
                    self._set(session, GLOBAL_INTEL_SETTING, "on")
                yield session

    @contextmanager
    def tenants_in_turn(self) -> Iterator[TenantTurns]:
        """One transaction doing work for several tenants in turn (ingest's group commit, ADR
        0027); commits on success, rolls back on error, all or nothing.

        ``turns.scope(tenant_id)`` scopes the transaction's one session to that tenant: the ORM
        filter and, on PostgreSQL, ``app.tenant_id`` for row-level security, both set anew at
        each turn, so every statement runs under exactly one tenant's scope. After the commit,
        ``watch_writes`` hears of every tenant the transaction was scoped to, if it wrote.
        """
        with self._make() as session:
            session.info[_TURNS] = set()
            with session.begin():
                yield TenantTurns(session, lambda value: self._set(session, TENANT_SETTING, value))

    @contextmanager
    def system(self) -> Iterator[ScopedSession]:
        """A transaction for control-plane tables (tenants, users); tenant rows stay hidden.

        The ORM filter is off, but on PostgreSQL no tenant is set, so row-level security still
        shows no tenant-owned row. Code must not rely on reading tenant rows here.
        """
        with self._make() as session:
            session.info[_SYSTEM] = True
            with session.begin():
                yield session

    @contextmanager
    def login(self, user_id: uuid.UUID) -> Iterator[ScopedSession]:
        """A system transaction that may also read ``user_id``'s memberships in every tenant."""
        with self.system() as session:
            self._set(session, USER_SETTING, str(user_id))
            yield session

    def _set(self, session: ScopedSession, name: str, value: str) -> None:
        # set_config(..., true) is transaction-local (like SET LOCAL): it ends with the
        # transaction, committed or not, so a pooled connection never carries a tenant over.
        # The driver's SQL on the connection: through ``session.execute`` the ORM's statement
        # hooks and compilation cost more than the round trip (8 % of an ingest process's CPU
        # when group commit sets the tenant for each batch).
        if self._postgres:
            conn = session.read_connection()
            conn.exec_driver_sql("SELECT set_config(%s, %s, true)", (name, value))


class TenantTurns:
    """The session of a ``tenants_in_turn`` transaction, scoped to one tenant at a time."""

    def __init__(self, session: ScopedSession, set_tenant: Callable[[str], None]) -> None:
        self._session = session
        self._set_tenant = set_tenant  # app.tenant_id for this transaction (PostgreSQL)

    def scope(self, tenant_id: uuid.UUID) -> ScopedSession:
        """The transaction's session, from now on scoped to ``tenant_id`` only.

        Objects added under the previous tenant are flushed (written in its scope), then the
        identity map is emptied: nothing loaded under it stays reachable once the session
        serves another.
        """
        session = self._session
        session.flush()
        session.expunge_all()
        session.info[_TENANT] = tenant_id
        session.info[_TURNS].add(tenant_id)
        self._set_tenant(str(tenant_id))
        return session
