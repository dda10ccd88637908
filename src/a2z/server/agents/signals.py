"""In-process signal from the API to the agent gateway: these agents have something new for
them (a configuration version or a command). The gateway delivers it on their live channel;
an agent connected to another process gets it at its next heartbeat there."""

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
        for listener in list(self._listeners):
            try:
                listener(tenant_id, agent_ids)
            except Exception:  # a listener's bug must not fail the API call that committed
                log.exception("agent signal listener failed")
