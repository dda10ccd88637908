"""PostgreSQL backends that run at their client process's CPU priority.

An operator lowers the priority of the throughput roles where they share cores with the API
(``nice -n 10 a2z server --role ingest``, systemd ``Nice=10``; docs/operating.md). Most of an
ingest process's CPU, though, is spent by the PostgreSQL backends serving its connections,
which the kernel schedules as postmaster's children at its priority, beside the backends
answering searches. So the niceness would stop at the client. With the ``prioritize``
extension in the database (Debian: ``postgresql-<version>-prioritize``), each new connection
of a process running at niceness N sets its own backend to N too: a role may lower its own
backends' priority, never raise it, so no privilege is needed beyond the extension's
installation (docs/adr/0029-backend-priority.md measures what it buys).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from psycopg import sql
from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

EXTENSION = "prioritize"


def process_niceness() -> int:
    """This process's niceness (0 unless it was started under ``nice`` or ``Nice=``)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def follow_niceness(engine: Engine, niceness: int) -> None:
    """Make every new connection of ``engine`` (PostgreSQL) set its backend to ``niceness``.

    Nothing happens at niceness 0 or below (a backend cannot be raised); without the extension
    a warning says what to install, once, and the connections work as before.
    """
    if niceness > 0:
        event.listen(engine, "connect", _FollowNiceness(niceness))


class _FollowNiceness:
    """The ``connect`` listener: looks the extension up on the first connection, then sets."""

    def __init__(self, niceness: int) -> None:
        self.niceness = niceness
        self._lock = threading.Lock()  # the pool connects from several threads at once
        self._resolved = False
        self._call: sql.Composable | None = None

    def __call__(self, dbapi_conn: Any, _record: Any) -> None:
        with self._lock:
            if not self._resolved:
                self._call = _setter(dbapi_conn, self.niceness)
                self._resolved = True
        if self._call is None:
            return
        with dbapi_conn.cursor() as cur:
            row = cur.execute(self._call, (self.niceness,)).fetchone()
        dbapi_conn.commit()  # the pool hands the connection out idle, not inside our query
        if not (row and row[0]):
            # The extension reports a refused setpriority() as a warning and false (a backend
            # already nicer than asked, or a platform without it): the connection still serves.
            log.warning("database backend kept its priority: set_backend_priority(%d) refused",
                        self.niceness)  # fmt: skip


def _setter(dbapi_conn: Any, niceness: int) -> sql.Composable | None:
    """The qualified ``set_backend_priority`` call, or None (and a warning) without it."""
    with dbapi_conn.cursor() as cur:
        row = cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = %s",
            (EXTENSION,),
        ).fetchone()
    dbapi_conn.commit()
    if row is None:
        log.warning(
            "this process runs at niceness %d but its PostgreSQL backends stay at the server's: "
            "install the %r extension (Debian: postgresql-<version>-prioritize; then, as a "
            "superuser in this database, CREATE EXTENSION %s) so they follow it",
            niceness, EXTENSION, EXTENSION,
        )  # fmt: skip
        return None
    return sql.SQL("SELECT {}.set_backend_priority(pg_backend_pid(), %s)").format(
        sql.Identifier(row[0])
    )
