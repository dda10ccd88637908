"""Signal from the API to the agent gateway: these agents have something new for them (a
configuration version or a command). The gateway delivers it on their live channel. In one
process the signal is a call; across processes sharing PostgreSQL a relay carries it
(``signal_relay``, LISTEN/NOTIFY), so an agent connected to another process gets it at once
too. Should a signal be lost, the agent still catches up at its next heartbeat."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

log = logging.getLogger(__name__)

Listener = Callable[[uuid.UUID, list[uuid.UUID]], None]


class AgentSignals:
    """Fan-out of 'agent has news' to whoever listens (the gateway, when this process runs one)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.relay: Listener | None = None  # carries local changes to other processes

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(tenant_id, agent_ids)`` on every signal; it must not block."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def changed(self, tenant_id: uuid.UUID, agent_ids: list[uuid.UUID]) -> None:
        """Tell the listeners; call only after the change is committed."""
        if not agent_ids:
            return
        self.received(tenant_id, agent_ids)
        if self.relay is not None:
            try:
                self.relay(tenant_id, agent_ids)
            except Exception:  # the other processes catch up at the agents' next heartbeat
                log.exception("relaying an agent signal failed")

    def received(self, tenant_id: uuid.UUID, agent_ids: list[uuid.UUID]) -> None:
        """Tell this process's listeners only (a signal relayed from another process)."""
        for listener in list(self._listeners):
            try:
                listener(tenant_id, agent_ids)
            except Exception:  # a listener's bug must not fail the API call that committed
                log.exception("agent signal listener failed")
