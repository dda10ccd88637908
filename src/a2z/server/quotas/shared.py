"""Token buckets kept in PostgreSQL, so a tenant's event rate holds across server processes.

Several API and gateway processes (``--workers``, several hosts) each admitting a tenant's
batches against their own in-memory bucket would let the tenant through at N times its rate.
Here each admission is one short transaction in the tenant's scope (RLS applies): refill the
tenant's row from the database clock and lock it, then take the tokens if they are there. The
row lock orders concurrent admissions of one tenant; other tenants' rows are untouched, so a
tenant at its limit never slows another's admissions. The arithmetic is ``TokenBucket``'s.
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
_TAKE = text("UPDATE rate_buckets SET tokens = tokens - :n WHERE tenant_id = :tenant")


def take(
    sessions: SessionFactory, tenant_id: uuid.UUID, n: int, *, rate: float, burst: float
) -> float:
    """Take ``n`` tokens from the tenant's shared bucket: 0.0 when taken, else the seconds to
    wait before asking again (``TokenBucket.take``'s contract, oversize batches included)."""
    with sessions.tenant(tenant_id) as session:
        params = {"tenant": tenant_id, "rate": rate, "burst": burst}
        tokens = float(session.execute(_REFILL, params).scalar_one())
        need = min(float(n), burst)
        if tokens >= need:
            session.execute(_TAKE, {"tenant": tenant_id, "n": n})
            return 0.0
        return (need - tokens) / rate
