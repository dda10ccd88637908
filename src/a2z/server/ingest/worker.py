"""The ingest worker: bus message -> decoded batch -> one transaction in the tenant's scope."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy.exc import DataError

from a2z.records import Batch, WireError, decode_batch
from a2z.server.agents import service as agents
from a2z.server.bus.base import Message, PoisonMessage, parse_events_subject
from a2z.server.events import service as events
from a2z.server.metrics import ServerMetrics
from a2z.server.quotas.service import Quotas
from a2z.server.store.session import SessionFactory

STAGE = "ingest"


class IngestWorker:
    """Writes each batch and the agent's progress in one transaction, then lets the bus ack.

    Raises ``ValueError`` (``WireError``, ``PoisonMessage``) for a batch no retry can store, so
    the bus dead-letters it; any other error is transient and the bus redelivers.
    """

    def __init__(
        self, sessions: SessionFactory, metrics: ServerMetrics, quotas: Quotas | None = None
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        # Tenants' regions, to tag their events; a process's own cache unless one is shared.
        self._quotas = quotas or Quotas(sessions, metrics)

    async def handle(self, message: Message) -> None:
        """Bus handler: decode here, write in a thread so the event loop keeps serving.

        Decoding stays on the loop's thread: the wire module's zstd context is shared and not
        thread-safe (concurrent decodes in threads crash the process), and it takes ~1 ms.
        """
        tenant, agent = parse_events_subject(message.subject)
        tenant_id, agent_id = uuid.UUID(tenant), uuid.UUID(agent)
        try:
            batch = decode_batch(message.payload)
        except WireError:
            self._metrics.events_dropped.labels(STAGE, "wire").inc()  # records unknown: 1 batch
            raise
        self._metrics.events_in.labels(STAGE).inc(len(batch.records))
        try:
            await asyncio.to_thread(self._store, message.msg_id, tenant_id, agent_id, batch)
        except PoisonMessage:
            self._metrics.events_dropped.labels(STAGE, "poison").inc(len(batch.records))
            raise

    def _store(self, msg_id: str, tenant_id: uuid.UUID, agent_id: uuid.UUID, batch: Batch) -> None:
        started = time.perf_counter()
        region = self._quotas.policy(tenant_id).region
        try:
            with self._sessions.tenant(tenant_id) as session:
                stored = events.store_batch(
                    session=session, agent_id=agent_id, batch=batch, region=region
                )
                agents.record_batch(
                    session=session, agent_id=agent_id, boot_epoch=batch.boot_epoch, seq=batch.seq
                )
        except DataError as exc:  # a value the database refuses (e.g. NUL in text): for good
            raise PoisonMessage(f"store refused batch {msg_id}: {exc.orig}") from exc
        self._metrics.ingest_write_seconds.observe(time.perf_counter() - started)
        self._metrics.ingest_batch_records.observe(len(batch.records))
        self._metrics.events_stored.inc(stored)
        self._metrics.events_duplicate.inc(len(batch.records) - stored)
        self._metrics.events_out.labels(STAGE).inc(len(batch.records))
        self._metrics.ingest_lag_seconds.observe(max(0.0, time.time() - batch.sent_at))
