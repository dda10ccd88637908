"""The detect worker: bus message -> one tenant's detectors -> alert rows in the store.

Alerts raised in the backend are stored as a batch of the *detect stream* of the agent whose
batch raised them: agent id ``derived_stream_id(agent)``, the source batch's boot epoch and seq.
A redelivered source batch therefore maps onto the same event keys and its alerts collapse onto
the rows already written, the same exactly-once effect agent batches get.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError

from a2z.records import Alert, Batch, decode_batch
from a2z.server.bus.base import Message, parse_events_subject
from a2z.server.detect.detectors import BatchDetector
from a2z.server.events import service as events
from a2z.server.metrics import ServerMetrics
from a2z.server.store.session import SessionFactory

log = logging.getLogger(__name__)

DETECT_STREAM_NAMESPACE = uuid.UUID("5b0f6a3e-9d1c-4f57-8a51-2f4d3c9e7a10")


def derived_stream_id(agent_id: uuid.UUID) -> uuid.UUID:
    """The id under which the backend stores alerts it raised from ``agent_id``'s batches."""
    return uuid.uuid5(DETECT_STREAM_NAMESPACE, str(agent_id))


def _log_failure(future: Future[None]) -> None:
    if (exc := future.exception()) is not None:
        log.error("a detector failed to prepare; it will load on its first batch", exc_info=exc)


class DetectWorker:
    """Runs every detector on each batch and stores the alerts before the bus acks.

    Detector state is not thread-safe and must see a tenant's records one batch at a time, so
    all detection runs on one dedicated thread: the event loop stays free and the bus may still
    hand this worker several batches at once.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        metrics: ServerMetrics,
        detectors: Sequence[BatchDetector],
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._detectors = list(detectors)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a2z-detect")
        for detector in self._detectors:  # queued first: batches wait for it, startup does not
            self._executor.submit(detector.prepare).add_done_callback(_log_failure)

    async def handle(self, message: Message) -> None:
        """Bus handler: detect on the detection thread, store the alerts, then return (ack)."""
        tenant, agent = parse_events_subject(message.subject)
        batch = decode_batch(message.payload)
        loop = asyncio.get_running_loop()
        alerts = await loop.run_in_executor(self._executor, self._detect, tenant, batch)
        if alerts:
            await asyncio.to_thread(self._store, uuid.UUID(tenant), uuid.UUID(agent), batch, alerts)

    def close(self) -> None:
        """Let the detection in hand finish and release the thread."""
        self._executor.shutdown(wait=True)

    def _detect(self, tenant: str, batch: Batch) -> list[Alert]:
        started = time.perf_counter()
        alerts: list[Alert] = []
        for detector in self._detectors:
            try:
                found = detector.detect(tenant, batch.records)
            except DBAPIError:
                raise  # the database is unreachable: transient, so the bus redelivers the batch
            except Exception:
                # A detector's bug must not stall the tenant's stream (in the embedded server the
                # agent's ack waits on this handler): count it, log it, run the others.
                self._metrics.detect_errors.labels(detector=detector.name).inc()
                log.exception("detector %s failed on a batch of tenant %s", detector.name, tenant)
                continue
            self._metrics.detect_alerts.labels(detector=detector.name).inc(len(found))
            alerts.extend(found)
        self._metrics.detect_records.inc(len(batch.records))
        self._metrics.detect_seconds.observe(time.perf_counter() - started)
        return alerts

    def _store(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, source: Batch, alerts: list[Alert]
    ) -> None:
        stream = derived_stream_id(agent_id)
        batch = Batch(
            agent_id=str(stream),
            boot_epoch=source.boot_epoch,
            seq=source.seq,
            sent_at=time.time(),
            records=list(alerts),
        )
        with self._sessions.tenant(tenant_id) as session:
            events.store_batch(session=session, agent_id=stream, batch=batch)
