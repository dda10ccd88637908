"""Tenant limits and residency, cached per process: what the gateway and the HTTP ingest route
check before a batch goes on the bus, and what ingest tags events with.

The cache reloads every ``refresh_s`` seconds (and at once for a tenant an operator changed in
this process), so a limit set elsewhere takes effect within that time. On PostgreSQL the
event-rate bucket is one row per tenant shared by every process (``quotas.shared``), so the
rate holds for the whole deployment however many API processes admit batches; each process
leases tokens from it in blocks of about ``lease_s`` seconds of the tenant's rate and admits
from its block in memory (ADR 24). On SQLite (the embedded server, one process) the bucket is
in memory. Stored bytes are read from the usage ledger at
each reload, so a tenant may overshoot its storage limit by what it ingests within
``refresh_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from sqlalchemy import bindparam, select

from a2z.server.errors import NotFound, RateLimited
from a2z.server.events import usage
from a2z.server.metrics import ServerMetrics
from a2z.server.quotas import shared
from a2z.server.quotas.limiter import TokenBucket
from a2z.server.store.session import SessionFactory
from a2z.server.tenants.models import Tenant

_POLICY = select(
    Tenant.region,
    Tenant.retention_days,
    Tenant.events_per_second,
    Tenant.burst_events,
    Tenant.max_stored_bytes,
).where(Tenant.id == bindparam("tenant"))

log = logging.getLogger(__name__)

STORAGE_RETRY_S = 60.0
"""Retry-After given while a tenant is over its stored-bytes limit: space comes back only by
retention or a raised limit, so clients need not ask often."""


class OverLimit(RateLimited):
    """A tenant is over one of its limits; the batch is to be re-sent after ``retry_after_s``."""

    def __init__(self, detail: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(detail, retry_after=max(1, math.ceil(retry_after_s)))
        self.limit = limit  # "rate" or "storage"
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What the store and the limits need to know about a tenant."""

    region: str | None = None
    retention_days: int = 30
    events_per_second: int | None = None
    burst_events: int | None = None
    max_stored_bytes: int | None = None
    stored_bytes: int = 0  # at the last reload

    @property
    def burst(self) -> int | None:
        """Bucket size: as set, else one second's worth."""
        if self.events_per_second is None:
            return None
        return self.burst_events or self.events_per_second


@dataclass
class _Entry:
    policy: TenantPolicy
    loaded: float
    bucket: TokenBucket | None


@dataclass(frozen=True, slots=True)
class _Shortfall:
    """The shared bucket of a tenant held ``tokens`` at (or after) local time ``at``.

    Other processes only take tokens or put back at most what they took, so
    ``tokens + (now - at) * rate`` bounds what the bucket can give now, give or take the blocks
    other processes hold: a batch needing more is refused from memory, without a round trip.
    """

    tokens: float
    at: float  # local clock, read before the database answered: the bound stays an upper one
    rate: float
    burst: float

    def wait(self, need: float, rate: float, burst: float, now: float) -> float:
        """Seconds before ``need`` tokens can be there; 0.0 when they may be (ask the store)."""
        if (rate, burst) != (self.rate, self.burst):
            return 0.0  # the limits changed: this says nothing about the new bucket
        return max(0.0, (need - self.tokens) / rate - (now - self.at))


@dataclass(slots=True)
class _Lease:
    """Tokens this process took from a tenant's shared bucket and has not spent yet."""

    tokens: float
    expires: float  # local clock; after it the tokens go back with the next lease
    rate: float  # the limits they were leased under
    burst: float


LEASE_S = 0.5
"""A lease is about this many seconds of the tenant's rate: one bucket transaction per block of
batches instead of one per batch, while N processes can hold at most N blocks more than the
bucket allows (``shared.lease``)."""


@dataclass
class Quotas:
    """The per-process cache of tenant policies and their event-rate buckets."""

    sessions: SessionFactory
    metrics: ServerMetrics
    refresh_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    lease_s: float = LEASE_S
    _entries: dict[uuid.UUID, _Entry] = field(default_factory=dict)
    _short: dict[uuid.UUID, _Shortfall] = field(default_factory=dict)  # last refusal per tenant
    _leases: dict[uuid.UUID, _Lease] = field(default_factory=dict)
    _renewing: dict[uuid.UUID, threading.Lock] = field(default_factory=dict)
    _refused: set[uuid.UUID] = field(default_factory=set)  # last admission was refused
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def shared(self) -> bool:
        """Rate buckets live in the database (PostgreSQL), shared by every process."""
        return self.sessions.engine.dialect.name == "postgresql"

    def stale(self, tenant_id: uuid.UUID) -> bool:
        """True when ``policy`` would read the database first (call it in a thread)."""
        entry = self._entries.get(tenant_id)
        return entry is None or self.clock() - entry.loaded >= self.refresh_s

    def blocking(self, tenant_id: uuid.UUID, records: int = 1) -> bool:
        """True when ``admit`` of ``records`` would touch the database (call it in a thread)."""
        if self.stale(tenant_id):
            return True
        policy = self._entries[tenant_id].policy
        if not self.shared or policy.events_per_second is None:
            return False
        if self._leased(tenant_id, policy, records):
            return False
        return self._known_short(tenant_id, policy, records) == 0.0

    def refusing(self, tenant_id: uuid.UUID) -> bool:
        """True when this process refused the tenant's last batch and its limits are cached:
        the next frame is likely refused too, so it is worth reading just its header and asking
        ``refuse_early`` before decoding its records."""
        return tenant_id in self._refused and not self.stale(tenant_id)

    def refuse_early(self, tenant_id: uuid.UUID, records: int, *, stage: str) -> None:
        """Raise OverLimit (counted as throttled) when what this process knows proves that
        ``records`` cannot pass now; else return, taking nothing (``admit`` decides). Never
        touches the database."""
        if self.stale(tenant_id):
            return
        policy = self._entries[tenant_id].policy
        if _over_storage(policy):
            self._refuse(tenant_id, records, "storage", STORAGE_RETRY_S, stage)
        if policy.events_per_second is None:
            return
        if self.shared:
            if self._leased(tenant_id, policy, records):
                return
            wait = self._known_short(tenant_id, policy, records)
        else:
            with self._lock:
                bucket = self._entries[tenant_id].bucket
                wait = 0.0 if bucket is None else bucket.short(records, self.clock())
        if wait > 0:
            self._refuse(tenant_id, records, "rate", wait, stage)

    def policy(self, tenant_id: uuid.UUID) -> TenantPolicy:
        """The tenant's policy, reloaded when older than ``refresh_s``; NotFound if no tenant."""
        if self.stale(tenant_id):
            self.reload(tenant_id)
        return self._entries[tenant_id].policy

    def reload(self, tenant_id: uuid.UUID) -> TenantPolicy:
        """Read the tenant's limits and stored usage now (after an operator changed them)."""
        with self.sessions.system() as session:
            # A Core select: every process reloads each active tenant every ``refresh_s``, and
            # the ORM's ``get`` cost an ingest process ~4 % of its CPU with 100 tenants.
            tenant = session.read_connection().execute(_POLICY, {"tenant": tenant_id}).first()
            if tenant is None:
                raise NotFound("no such tenant")
            policy = TenantPolicy(
                region=tenant.region,
                retention_days=tenant.retention_days,
                events_per_second=tenant.events_per_second,
                burst_events=tenant.burst_events,
                max_stored_bytes=tenant.max_stored_bytes,
            )
        if policy.max_stored_bytes is not None:  # usage is tenant-owned: read in its scope
            with self.sessions.tenant(tenant_id) as session:
                stored = usage.stored_bytes(session=session)
            policy = dataclasses.replace(policy, stored_bytes=stored)
        now = self.clock()
        with self._lock:
            old = self._entries.get(tenant_id)
            self._entries[tenant_id] = _Entry(policy, now, _bucket(policy, old, now))
        return policy

    def admit(self, tenant_id: uuid.UUID, records: int, *, stage: str) -> None:
        """Let ``records`` of ``tenant_id`` in, or raise OverLimit (counted as throttled)."""
        policy = self.policy(tenant_id)
        limit, wait = None, 0.0
        if _over_storage(policy):
            limit, wait = "storage", STORAGE_RETRY_S
        elif self.shared:
            if policy.events_per_second is not None and policy.burst is not None:
                wait = self._admit_shared(tenant_id, records, policy)
                limit = "rate" if wait > 0 else None
        else:
            with self._lock:
                bucket = self._entries[tenant_id].bucket
                if bucket is not None:
                    wait = bucket.take(records, self.clock())
                    limit = "rate" if wait > 0 else None
        if limit is None:
            self._refused.discard(tenant_id)
            return
        self._refuse(tenant_id, records, limit, wait, stage)

    def _refuse(
        self, tenant_id: uuid.UUID, records: int, limit: str, wait: float, stage: str
    ) -> NoReturn:
        self._refused.add(tenant_id)
        self.metrics.events_throttled.labels(stage, limit).inc(records)
        detail = (
            "tenant is over its event rate"
            if limit == "rate"
            else "tenant is over its stored-bytes limit"
        )
        raise OverLimit(detail, limit=limit, retry_after_s=wait)

    def _admit_shared(self, tenant_id: uuid.UUID, records: int, policy: TenantPolicy) -> float:
        """0.0 when ``records`` were admitted from this process's lease (renewed if need be),
        else the seconds to wait."""
        if self._leased(tenant_id, policy, records, spend=True):
            return 0.0
        # A tenant over its rate keeps sending (an agent re-sends after each deferral, a flood
        # offers far more): refuse from memory what the last refusal proves cannot pass yet,
        # so its excess costs no transaction on its bucket row.
        wait = self._known_short(tenant_id, policy, records)
        if wait > 0:
            return wait
        with self._lock:
            renewing = self._renewing.setdefault(tenant_id, threading.Lock())
        # One renewal per tenant at a time: admissions waiting on it may find the new lease
        # covers them, and the process never holds more than one block of a tenant.
        with renewing:
            if self._leased(tenant_id, policy, records, spend=True):
                return 0.0
            return self._renew(tenant_id, records, policy)

    def _leased(
        self, tenant_id: uuid.UUID, policy: TenantPolicy, records: int, *, spend: bool = False
    ) -> bool:
        """True when this process's live lease for the tenant covers ``records`` (and, with
        ``spend``, they are taken from it)."""
        rate, burst = float(policy.events_per_second or 0), float(policy.burst or 0)
        with self._lock:
            lease = self._leases.get(tenant_id)
            if (
                lease is None
                or (lease.rate, lease.burst) != (rate, burst)
                or lease.tokens < records
                or self.clock() >= lease.expires
            ):
                return False
            if spend:
                lease.tokens -= records
            return True

    def _renew(self, tenant_id: uuid.UUID, records: int, policy: TenantPolicy) -> float:
        """Hand back what is left of the tenant's lease and take ``records`` plus a new block,
        in one transaction; the seconds to wait when the bucket does not hold ``records``."""
        rate, burst = float(policy.events_per_second or 0), float(policy.burst or 0)
        metrics = self.metrics
        asked = self.clock()
        with self._lock:
            old = self._leases.pop(tenant_id, None)
        returned = 0.0
        if old is not None and old.tokens > 0:
            if (old.rate, old.burst) != (rate, burst):
                # Leased under other limits: the bucket restarts full for the new ones.
                metrics.quota_lease_tokens.labels("dropped").inc(old.tokens)
            else:
                returned = old.tokens
                if asked >= old.expires:
                    metrics.quota_leases_expired.inc()
        block = self._block(rate, burst)
        try:
            granted, wait = shared.lease(
                self.sessions, tenant_id, records, block=block, returned=returned,
                rate=rate, burst=burst,
            )  # fmt: skip
        except BaseException:
            if returned:  # not handed back: keep them, they are still this process's
                with self._lock:
                    self._leases.setdefault(tenant_id, _Lease(returned, asked, rate, burst))
            raise
        if returned:
            metrics.quota_lease_tokens.labels("returned").inc(returned)
        with self._lock:
            if wait > 0:  # lease's contract: wait = (need - tokens) / rate
                held = min(float(records), burst) - wait * rate
                self._short[tenant_id] = _Shortfall(held, asked, rate, burst)
                # Come back when a whole block is there, not just this batch: a tenant held at
                # its rate would otherwise lease one batch's worth per transaction.
                wait = max(wait, (min(max(float(records), block), burst) - held) / rate)
            else:
                self._short.pop(tenant_id, None)
                if granted > records:
                    expires = asked + 2 * self.lease_s
                    self._leases[tenant_id] = _Lease(granted - records, expires, rate, burst)
        metrics.quota_leases.labels("short" if wait > 0 else "taken").inc()
        if wait == 0.0:
            metrics.quota_lease_tokens.labels("leased").inc(granted)
        return wait

    def _known_short(self, tenant_id: uuid.UUID, policy: TenantPolicy, records: int) -> float:
        """Seconds before the tenant's shared bucket can hold ``records`` tokens and a block
        (the refused wait for a block, so that the next lease is a whole one), by the last
        refusal this process saw; 0.0 when unknown or past (the store decides)."""
        short = self._short.get(tenant_id)
        burst = policy.burst
        if short is None or policy.events_per_second is None or burst is None:
            return 0.0
        rate = float(policy.events_per_second)
        need = min(max(float(records), self._block(rate, float(burst))), float(burst))
        return short.wait(need, rate, float(burst), self.clock())

    def _block(self, rate: float, burst: float) -> float:
        """Tokens a lease takes beyond its batch: ``lease_s`` of the rate, at most half the
        burst (so two processes can each hold one), at least one."""
        return max(1.0, min(rate * self.lease_s, burst / 2))


def _over_storage(policy: TenantPolicy) -> bool:
    return policy.max_stored_bytes is not None and policy.stored_bytes >= policy.max_stored_bytes


def _bucket(policy: TenantPolicy, old: _Entry | None, now: float) -> TokenBucket | None:
    """The tenant's bucket for ``policy``: the same one (with its tokens) if the limits did not
    change, else a new full one."""
    burst = policy.burst
    if policy.events_per_second is None or burst is None:
        return None
    if old is not None and old.bucket is not None:
        same = old.bucket.rate == policy.events_per_second and old.bucket.burst == burst
        if same:
            return old.bucket
    return TokenBucket.full(float(policy.events_per_second), float(burst), now)
