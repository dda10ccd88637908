"""Token buckets kept in PostgreSQL, so a tenant's event rate holds across server processes.

Several API and gateway processes (``--workers``, several hosts) each admitting a tenant's
batches against their own in-memory bucket would let the tenant through at N times its rate.
Here a process leases tokens in blocks, each lease one short transaction in the tenant's scope
(RLS applies): refill the tenant's row from the database clock and lock it, put back what the
process's previous lease left, then take a block if the tokens are there. The process admits
from its block in memory (``quotas.service``, ADR 24). The row lock orders concurrent leases of
one tenant; other tenants' rows are untouched, so a tenant at its limit never slows another's
admissions. The arithmetic is ``TokenBucket``'s.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text

from a2z.server.store.session import SessionFactory

# Refill (or create, or restart after a limit change) and lock the tenant's row; returns the
# tokens now available. Times are the database's: the one clock all processes share.
_REFILL = text(
    """
    INSERT INTO rate_buckets (tenant_id, rate, burst, tokens, stamp)
    VALUES (:tenant, :rate, :burst, :burst, extract(epoch FROM clock_timestamp()))
    ON CONFLICT (tenant_id) DO UPDATE SET
      tokens = CASE
        WHEN rate_buckets.rate = excluded.rate AND rate_buckets.burst = excluded.burst
        THEN LEAST(excluded.burst, rate_buckets.tokens
                   + GREATEST(0, excluded.stamp - rate_buckets.stamp) * excluded.rate)
        ELSE excluded.burst END,
      stamp = GREATEST(rate_buckets.stamp, excluded.stamp),
      rate = excluded.rate,
      burst = excluded.burst
    RETURNING tokens
    """
)
_SET = text("UPDATE rate_buckets SET tokens = :tokens WHERE tenant_id = :tenant")


def lease(
    sessions: SessionFactory,
    tenant_id: uuid.UUID,
    n: int,
    *,
    block: float,
    returned: float,
    rate: float,
    burst: float,
) -> tuple[float, float]:
    """In one transaction: put back the ``returned`` tokens of this process's previous lease
    (never beyond ``burst``), then take ``n`` tokens plus, if the bucket holds them, enough to
    make a block of ``block`` (the lease). Returns ``(granted, wait)``: ``granted >= n`` tokens
    taken and ``wait == 0.0``, or nothing taken and ``wait`` seconds before ``n`` can be there
    (``TokenBucket.take``'s contract: a batch larger than ``burst`` passes once the bucket is
    full, leaving it in debt).

    What the process admits never exceeds what it was granted, and the bucket row never holds
    more than ``burst``, so N processes admit at most ``burst + rate * t + N * block`` in any
    ``t`` seconds (at most ``burst + rate * t`` from the bucket's creation): the bucket's bound,
    plus the blocks held in memory when the interval starts.
    """
    with sessions.tenant(tenant_id) as session:
        params = {"tenant": tenant_id, "rate": rate, "burst": burst}
        tokens = min(burst, float(session.execute(_REFILL, params).scalar_one()) + returned)
        need = min(float(n), burst)
        if tokens >= need:
            granted = max(float(n), min(tokens, block))
            session.execute(_SET, {"tenant": tenant_id, "tokens": tokens - granted})
            return granted, 0.0
        if returned > 0:
            session.execute(_SET, {"tenant": tenant_id, "tokens": tokens})
        return 0.0, (need - tokens) / rate
