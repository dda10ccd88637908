"""Per-tenant compiled rules, refreshed from the tenant's effective rule set when it changes.

The Sigma detector and the correlation detector both compile something from a tenant's
effective rule set (shipped rules, its overrides, its custom ones). Looking the set up costs a
tenant-scoped transaction, compiling it far more, so both keep the result per tenant: the set is
looked at most every ``refresh_s`` seconds and rebuilt only when its digest changed. At most
``max_tenants`` tenants are held; the least recently seen is dropped.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from a2z.rules.catalog import Catalog
from a2z.server.rules.service import EffectiveRuleSet, effective_rules
from a2z.server.store.session import SessionFactory

T = TypeVar("T")

Build = Callable[[str, EffectiveRuleSet, "T | None"], T]
"""Compile a tenant's effective set; gets the previous value (or None) to keep what it can."""


@dataclass
class _Entry(Generic[T]):
    checked_at: float  # monotonic time of the last look at the tenant's effective rule set
    digest: str  # the effective set ``value`` was built from
    value: T


class TenantRuleCache(Generic[T]):
    """What ``build`` made of each tenant's effective rule set, kept while the set is unchanged."""

    def __init__(
        self,
        sessions: SessionFactory,
        catalog: Catalog,
        build: Build[T],
        *,
        refresh_s: float,
        max_tenants: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._catalog = catalog
        self._build = build
        self._refresh_s = refresh_s
        self._max_tenants = max_tenants
        self._clock = clock
        self._tenants: OrderedDict[str, _Entry[T]] = OrderedDict()

    def get(self, tenant: str) -> T:
        """The tenant's value, rebuilt if its effective set changed since it was built."""
        now = self._clock()
        cached = self._tenants.get(tenant)
        if cached is not None:
            self._tenants.move_to_end(tenant)
            if now - cached.checked_at < self._refresh_s:
                return cached.value
        with self._sessions.tenant(uuid.UUID(tenant)) as session:
            effective = effective_rules(session=session, catalog=self._catalog)
        if cached is not None and cached.digest == effective.digest:
            cached.checked_at = now
            return cached.value
        value = self._build(tenant, effective, None if cached is None else cached.value)
        self._tenants[tenant] = _Entry(now, effective.digest, value)
        self._tenants.move_to_end(tenant)
        if len(self._tenants) > self._max_tenants:
            self._tenants.popitem(last=False)
        return value

    def peek(self, tenant: str) -> T | None:
        """The tenant's value if held, without a look at its rule set."""
        entry = self._tenants.get(tenant)
        return None if entry is None else entry.value

    def __len__(self) -> int:
        return len(self._tenants)
