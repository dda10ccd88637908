"""Agent signals between server processes that share one PostgreSQL: LISTEN/NOTIFY.

An API process that commits a configuration change or a command NOTIFYs channel
``a2z_agent_signals`` with its origin, the tenant and the agent ids; every process running an
agent gateway LISTENs and hands signals of other origins to its gateway, which pushes at once
to the agents connected to it. PostgreSQL is already what every scale-out process shares, and
a notification is ephemeral, which is all a signal needs: delivery stays level-triggered
(ADR 7), so a notification lost while a listener reconnects only delays the agent until its
next heartbeat. The embedded SQLite mode runs one process and needs no relay.
"""

from __future__ import annotations

import logging
import threading
import uuid

import psycopg

from a2z.server.agents.signals import AgentSignals
from a2z.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

CHANNEL = "a2z_agent_signals"
IDS_PER_NOTIFY = 150  # 37 bytes an id: well under PostgreSQL's 8000-byte payload limit
WAIT_SECONDS = 1.0  # the listener looks at its stop flag this often
RECONNECT_SECONDS = 2.0  # pause before listening again after the connection failed


class PgSignalRelay:
    """Publishes this process's agent signals and delivers other processes' to ``signals``."""

    def __init__(self, conninfo: str, signals: AgentSignals, metrics: ServerMetrics) -> None:
        self._conninfo = conninfo
        self._signals = signals
        self._metrics = metrics
        self.origin = uuid.uuid4().hex  # tells our own notifications apart
        self._publisher: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()  # one publisher connection, API worker threads
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    # -- publishing (API side) ----------------------------------------------------------------

    def publish(self, tenant_id: uuid.UUID, agent_ids: list[uuid.UUID]) -> None:
        """NOTIFY the other processes (called after the change is committed)."""
        for start in range(0, len(agent_ids), IDS_PER_NOTIFY):
            ids = ",".join(str(a) for a in agent_ids[start : start + IDS_PER_NOTIFY])
            self._notify(f"{self.origin} {tenant_id} {ids}")
        self._metrics.agent_signals.labels("sent").inc()

    def _notify(self, payload: str) -> None:
        with self._lock:
            try:
                if self._publisher is None or self._publisher.closed:
                    self._publisher = psycopg.connect(self._conninfo, autocommit=True)
                self._publisher.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except psycopg.Error as exc:
                # The agents catch up at their next heartbeat; try a fresh connection next time.
                self._metrics.agent_signals.labels("failed").inc()
                log.warning("cannot relay an agent signal: %s", exc)
                if self._publisher is not None:
                    self._publisher.close()
                self._publisher = None

    # -- listening (gateway side) ---------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Listen on a thread of its own; returns once LISTEN is in effect (or ``timeout``)."""
        self._stop.clear()
        self._listening.clear()
        self._thread = threading.Thread(target=self._listen, name="agent-signals", daemon=True)
        self._thread.start()
        if not self._listening.wait(timeout):
            log.warning("agent signals: not listening yet; agents catch up at heartbeats")

    def close(self) -> None:
        """Stop listening and close the connections."""
        self._stop.set()
        if self._thread is not None:
            self._notify(f"{self.origin} stop")  # wakes the listener now, not in a second
            self._thread.join(WAIT_SECONDS * 5)
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=WAIT_SECONDS):
                            self._deliver(note.payload)
                            if self._stop.is_set():
                                break
            except psycopg.Error as exc:
                log.warning("agent signals: listening failed (%s); again shortly", exc)
                self._stop.wait(RECONNECT_SECONDS)

    def _deliver(self, payload: str) -> None:
        parts = payload.split(" ")
        if parts[0] == self.origin or parts[1:] == ["stop"]:
            return  # ours (this process's listeners were told directly), or a closing wake-up
        try:
            tenant_id = uuid.UUID(parts[1])
            agent_ids = [uuid.UUID(a) for a in parts[2].split(",")]
        except (IndexError, ValueError):
            self._metrics.agent_signals.labels("bad").inc()
            log.warning("ignoring a malformed agent signal %r", payload[:200])
            return
        self._metrics.agent_signals.labels("received").inc()
        self._signals.received(tenant_id, agent_ids)


def relay_for(db_url: str, signals: AgentSignals, metrics: ServerMetrics) -> PgSignalRelay:
    """A relay on the database the engine at ``db_url`` uses (a SQLAlchemy URL)."""
    from sqlalchemy.engine import make_url

    conninfo = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return PgSignalRelay(conninfo, signals, metrics)


__all__ = ["CHANNEL", "PgSignalRelay", "relay_for"]
