"""The ingest worker: bus message -> decoded batch -> one transaction in the tenant's scope."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy.exc import DataError

from a2z.records import Batch, decode_batch
from a2z.server.agents import service as agents
from a2z.server.bus.base import Message, PoisonMessage, parse_events_subject
from a2z.server.events import service as events
from a2z.server.metrics import ServerMetrics
from a2z.server.store.session import SessionFactory


class IngestWorker:
    """Writes each batch and the agent's progress in one transaction, then lets the bus ack.

    Raises ``ValueError`` (``WireError``, ``PoisonMessage``) for a batch no retry can store, so
    the bus dead-letters it; any other error is transient and the bus redelivers.
    """

    def __init__(self, sessions: SessionFactory, metrics: ServerMetrics) -> None:
        self._sessions = sessions
        self._metrics = metrics

    async def handle(self, message: Message) -> None:
        """Bus handler: decode here, write in a thread so the event loop keeps serving.

        Decoding stays on the loop's thread: the wire module's zstd context is shared and not
        thread-safe (concurrent decodes in threads crash the process), and it takes ~1 ms.
        """
        tenant, agent = parse_events_subject(message.subject)
        tenant_id, agent_id = uuid.UUID(tenant), uuid.UUID(agent)
        batch = decode_batch(message.payload)
        await asyncio.to_thread(self._store, message.msg_id, tenant_id, agent_id, batch)

    def _store(self, msg_id: str, tenant_id: uuid.UUID, agent_id: uuid.UUID, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            with self._sessions.tenant(tenant_id) as session:
                stored = events.store_batch(session=session, agent_id=agent_id, batch=batch)
                agents.record_batch(
                    session=session, agent_id=agent_id, boot_epoch=batch.boot_epoch, seq=batch.seq
                )
        except DataError as exc:  # a value the database refuses (e.g. NUL in text): for good
            raise PoisonMessage(f"store refused batch {msg_id}: {exc.orig}") from exc
        self._metrics.ingest_write_seconds.observe(time.perf_counter() - started)
        self._metrics.ingest_batch_records.observe(len(batch.records))
        self._metrics.events_stored.inc(stored)
        self._metrics.events_duplicate.inc(len(batch.records) - stored)
