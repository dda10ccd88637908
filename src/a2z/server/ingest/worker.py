"""The ingest worker: bus messages -> decoded batches -> group-committed transactions.

Group commit (ADR 0027): the batches that arrive while the writers are busy are stored
together, in one transaction that takes each batch's tenant in turn. A batch's handler returns
(and the bus acks it) only after the transaction holding it committed. What a transaction
costs beyond its rows (a pooled connection checked out and pinged, the commit and its WAL
flush, one usage upsert and one progress update per tenant instead of per batch) was a fifth
of the store half's CPU: 31.6 -> 25.8 CPU-ms per 1,000 events at 16 batches per transaction
(docs/benchmarks.md, 2026-11-29). An idle worker writes a lone batch at once, so grouping adds
no wait.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from sqlalchemy.exc import DataError

from a2z.records import Batch, WireError, decode_batch
from a2z.server.agents import service as agents
from a2z.server.bus.base import Message, PoisonMessage, parse_events_subject
from a2z.server.events import service as events
from a2z.server.metrics import ServerMetrics
from a2z.server.quotas.service import Quotas
from a2z.server.store.session import ScopedSession, SessionFactory

STAGE = "ingest"
WRITERS = 2  # transactions one ingest process has open at once
GROUP_BATCHES = 16  # most batches one transaction stores


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded batch from the bus, to be stored."""

    msg_id: str
    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    batch: Batch

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID, int, int]:
        """The order writers take locks in: tenant, then the batch's own key."""
        return (self.tenant_id, self.agent_id, self.batch.boot_epoch, self.batch.seq)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A delivery waiting for a writer; ``done`` resolves once its transaction ended."""

    delivery: Delivery
    done: asyncio.Future[None]


class IngestWorker:
    """Writes batches and their agents' progress, committed before the bus may ack them.

    ``handle`` raises ``ValueError`` (``WireError``, ``PoisonMessage``) for a batch no retry
    can store, so the bus dead-letters it; any other error is transient and the bus redelivers.
    A group whose transaction fails for any reason is written again one batch per transaction,
    so one bad batch never holds back the others, and each gets its own outcome.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        metrics: ServerMetrics,
        quotas: Quotas | None = None,
        *,
        writers: int = WRITERS,
        group_batches: int = GROUP_BATCHES,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        # Tenants' regions, to tag their events; a process's own cache unless one is shared.
        self._quotas = quotas or Quotas(sessions, metrics)
        self._writers = max(1, writers)
        self._group_batches = max(1, group_batches)
        self._pending: list[_Pending] = []
        self._writing: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Messages to hand ``handle`` at once: every writer busy and a whole group waiting for
        each. Only ``writers`` connections are used, however many wait."""
        return self._writers * (self._group_batches + 1)

    async def handle(self, message: Message) -> None:
        """Bus handler: decode here, then wait until a writer thread committed the batch.

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
        done = asyncio.get_running_loop().create_future()
        delivery = Delivery(message.msg_id, tenant_id, agent_id, batch)
        self._pending.append(_Pending(delivery, done))
        self._start_writers()
        try:
            await done
        except PoisonMessage:
            self._metrics.events_dropped.labels(STAGE, "poison").inc(len(batch.records))
            raise

    def _start_writers(self) -> None:
        while self._pending and len(self._writing) < self._writers:
            group = self._pending[: self._group_batches]
            del self._pending[: len(group)]
            task = asyncio.create_task(self._write(group))
            self._writing.add(task)
            task.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        self._writing.discard(task)
        self._start_writers()

    async def _write(self, group: list[_Pending]) -> None:
        deliveries = [item.delivery for item in group]
        try:
            outcomes = await asyncio.to_thread(self._store_group, deliveries)
        except BaseException as exc:  # cancelled at shutdown: the bus redelivers, unacked
            for item in group:
                if item.done.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    item.done.cancel()
                else:
                    item.done.set_exception(exc)
            raise
        for item, outcome in zip(group, outcomes, strict=True):
            if item.done.done():  # its handler was cancelled meanwhile
                continue
            if outcome is None:
                item.done.set_result(None)
            else:
                item.done.set_exception(outcome)

    def _store_group(self, group: Sequence[Delivery]) -> list[Exception | None]:
        """Store ``group`` in one transaction; each delivery's error (None: stored)."""
        if len(group) > 1:
            try:
                self.write(group)
            except Exception:  # each batch alone says which one failed, and why
                self._metrics.ingest_group_retried.inc()
            else:
                return [None] * len(group)
        outcomes: list[Exception | None] = []
        for delivery in group:
            try:
                self.write([delivery])
            except Exception as exc:  # the handler raises it for the bus
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    def write(self, group: Sequence[Delivery]) -> None:
        """Store ``group`` in one transaction, all or nothing (blocking; ``handle`` runs it in
        a writer thread). ``PoisonMessage`` when the database refuses a value for good."""
        started = time.perf_counter()
        # Every writer takes its rows' locks in one order (tenant, agent, epoch, seq: the
        # batch keys, usage rows and agent rows), so two transactions wait, never deadlock.
        ordered = sorted(group, key=lambda item: item.key)
        tenants = [(t, list(items)) for t, items in groupby(ordered, key=lambda i: i.tenant_id)]
        # Read before the transaction opens: a stale policy is reloaded in a session of its own.
        regions = {tenant_id: self._quotas.policy(tenant_id).region for tenant_id, _ in tenants}
        stored = 0
        try:
            with self._sessions.tenants_in_turn() as turns:
                for tenant_id, items in tenants:
                    session = turns.scope(tenant_id)
                    stored += _store_tenant(session, items, regions[tenant_id])
        except DataError as exc:  # a value the database refuses (e.g. NUL in text): for good
            ids = ", ".join(item.msg_id for item in group)
            raise PoisonMessage(f"store refused batch {ids}: {exc.orig}") from exc
        records = sum(len(item.batch.records) for item in group)
        self._metrics.ingest_write_seconds.observe(time.perf_counter() - started)
        self._metrics.ingest_group_batches.observe(len(group))
        now = time.time()
        for item in group:
            self._metrics.ingest_batch_records.observe(len(item.batch.records))
            self._metrics.ingest_lag_seconds.observe(max(0.0, now - item.batch.sent_at))
        self._metrics.events_stored.inc(stored)
        self._metrics.events_duplicate.inc(records - stored)
        self._metrics.events_out.labels(STAGE).inc(records)


def _store_tenant(session: ScopedSession, items: list[Delivery], region: str | None) -> int:
    """Store one tenant's share of a group, in the session scoped to it: the rows stored."""
    counts = events.store_batches(
        session=session, batches=[(item.agent_id, item.batch) for item in items], region=region
    )
    agents.record_batches(
        session=session,
        keys=[(item.agent_id, item.batch.boot_epoch, item.batch.seq) for item in items],
    )
    return sum(counts)
