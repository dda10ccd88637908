"""The ingest worker: bus message -> decoded batch -> one transaction in the tenant's scope."""

from __future__ import annotations

import asyncio
import uuid

from a2z.records import decode_batch
from a2z.server.agents import service as agents
from a2z.server.bus.base import Message, parse_events_subject
from a2z.server.events import service as events
from a2z.server.metrics import ServerMetrics
from a2z.server.store.session import SessionFactory


class IngestWorker:
    """Writes each batch and the agent's progress in one transaction, then lets the bus ack."""

    def __init__(self, sessions: SessionFactory, metrics: ServerMetrics) -> None:
        self._sessions = sessions
        self._metrics = metrics

    async def handle(self, message: Message) -> None:
        """Bus handler; the database work runs in a thread so the event loop keeps serving."""
        await asyncio.to_thread(self._store, message)

    def _store(self, message: Message) -> None:
        tenant, agent = parse_events_subject(message.subject)
        tenant_id, agent_id = uuid.UUID(tenant), uuid.UUID(agent)
        batch = decode_batch(message.payload)
        with self._sessions.tenant(tenant_id) as session:
            stored = events.store_batch(session=session, agent_id=agent_id, batch=batch)
            agents.record_batch(
                session=session, agent_id=agent_id, boot_epoch=batch.boot_epoch, seq=batch.seq
            )
        self._metrics.events_stored.inc(stored)
        self._metrics.events_duplicate.inc(len(batch.records) - stored)
