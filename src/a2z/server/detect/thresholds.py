"""Each tenant's anomaly threshold (``a2z admin tenant set --anomaly-threshold``), cached."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import select

from a2z.server.store.session import SessionFactory
from a2z.server.tenants.models import Tenant


class TenantThresholds:
    """A tenant's own threshold (None: the model's default), looked up at most every
    ``refresh_s`` seconds, so an operator's change takes effect within that time."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        refresh_s: float = 30.0,
        max_tenants: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._refresh_s = refresh_s
        self._max_tenants = max_tenants
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, float | None]] = OrderedDict()

    def of(self, tenant: str) -> float | None:
        """The tenant's threshold, from the cache while it is fresh."""
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._refresh_s:
            self._cache.move_to_end(tenant)
            return cached[1]
        with self._sessions.system() as session:
            value = session.scalar(
                select(Tenant.anomaly_threshold).where(Tenant.id == uuid.UUID(tenant))
            )
        self._cache[tenant] = (now, value)
        self._cache.move_to_end(tenant)
        if len(self._cache) > self._max_tenants:
            self._cache.popitem(last=False)
        return value
