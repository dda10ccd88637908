"""The event-rate bucket each tenant shares across server processes (PostgreSQL deployments)."""

from __future__ import annotations

from sqlalchemy import Float
from sqlalchemy.orm import Mapped, mapped_column

from a2z.server.store.base import Base, TenantOwned


class RateBucket(TenantOwned, Base):
    """A tenant's event-rate token bucket, one row per tenant.

    Every API or gateway process takes tokens from this row inside a transaction that locks it,
    so a tenant's limit holds for the whole deployment, not per process. Times are the
    database's clock (epoch seconds), the one clock every process shares. ``rate`` and ``burst``
    are those the tokens were counted under: a changed limit starts a full bucket.
    """

    __tablename__ = "rate_buckets"

    rate: Mapped[float] = mapped_column(Float)  # tokens per second
    burst: Mapped[float] = mapped_column(Float)  # most tokens held
    tokens: Mapped[float] = mapped_column(Float)  # may be negative: debt of an oversize batch
    stamp: Mapped[float] = mapped_column(Float)  # database time of the last refill
