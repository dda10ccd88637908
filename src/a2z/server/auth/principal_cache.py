"""Verified principals by bearer credential, for a few seconds: a hit skips the JWT check and
the database lookup that authenticating costs on every request.

Revocation stays immediate: every commit that changes a credential, a membership, a user or a
tenant bumps the shared ``RevocationCounter`` before the revoking request answers, and an entry
verified under an older count is never used again (docs/adr/0016-api-request-path.md).

Requests that miss together with one credential share one verification (``verify_shared``):
when a busy dashboard's entry ends, its 200 clients all miss at once, and each verifying for
itself queued them for ~2 s behind the thread pool (docs/benchmarks.md, API, 2026-11-28).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from a2z.server.auth.models import ApiKey, AuthSession
from a2z.server.auth.principal import Principal
from a2z.server.auth.revocations import RevocationCounter
from a2z.server.store.session import SessionFactory
from a2z.server.tenants.models import Membership, Tenant, User

DEFAULT_MAX_ENTRIES = 10_000

# Rows whose update or deletion may end or change a principal: what the session factory watches.
REVOCABLE = (AuthSession, ApiKey, Membership, User, Tenant)
# Bookkeeping columns of those rows that change no principal: a key's last use, a session's
# refresh-token rotation. Any other column counts, including ones added later.
NOT_REVOKING = frozenset({"last_used_at", "refresh_hash", "previous_hash"})


def watch_revocations(sessions: SessionFactory, notify: Callable[[], None]) -> None:
    """Call ``notify()`` after every commit through ``sessions`` that may revoke a principal.

    Wire it wherever a process that changes credentials builds its session factory (the
    server, ``a2z admin``), with the data directory's counter, so servers see the change.
    """
    sessions.watch(REVOCABLE, notify, ignore=NOT_REVOKING)


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    generation: int  # the revocation count the credential was verified under
    deadline: float  # time.monotonic() after which the entry is stale


class PrincipalCache:
    """Bounded map from a credential's digest to the principal it was verified as."""

    def __init__(
        self,
        counter: RevocationCounter,
        ttl_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.counter = counter
        self.ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()
        # Verifications running, by credential digest and the revocation count they read.
        self._in_flight: dict[tuple[bytes, int], asyncio.Task[Principal]] = {}

    @staticmethod
    def key(token: str) -> bytes:
        """The digest entries are kept under: the cache never holds a usable secret."""
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> Principal | None:
        """The cached principal, if verified under the current count and not yet stale."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.generation != self.counter.read() or time.monotonic() >= entry.deadline:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return entry.principal

    def generation(self) -> int:
        """Read before verifying: the entry is put under this count, not a later one."""
        return self.counter.read()

    def put(
        self, key: bytes, principal: Principal, generation: int, expires_at: float | None = None
    ) -> None:
        """Remember a verified principal; ``expires_at`` (epoch seconds) caps the entry's life."""
        if self.ttl_s <= 0:
            return
        life = self.ttl_s
        if expires_at is not None:
            life = min(life, expires_at - time.time())
        if life <= 0:
            return
        with self._lock:
            if len(self._entries) >= self._max and key not in self._entries:
                self._entries.pop(next(iter(self._entries)))  # the oldest insertion
            self._entries[key] = _Entry(principal, generation, time.monotonic() + life)

    async def verify_shared(
        self, key: bytes, verify: Callable[[], Awaitable[tuple[Principal, float | None]]]
    ) -> Principal:
        """The principal ``verify()`` resolves the credential to, put in the cache; a request
        arriving while a verification of the same credential under the same revocation count
        runs on this event loop awaits that one instead of starting its own.

        Sharing gives a waiter what verifying itself would have: the credential and the count
        are the same, and a revocation committed before it arrived has moved the count, so it
        starts a new verification. ``verify`` runs as its own task, so a client that goes away
        (its request cancelled) does not cancel the others' verification.
        """
        generation = self.generation()  # before the lookup: a revocation during it wins
        slot = (key, generation)
        loop = asyncio.get_running_loop()
        task = self._in_flight.get(slot)
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(self._verify(slot, verify))
            # Retrieved here too, so a failure no request is left awaiting is not logged.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._in_flight[slot] = task
        return await asyncio.shield(task)

    async def _verify(
        self,
        slot: tuple[bytes, int],
        verify: Callable[[], Awaitable[tuple[Principal, float | None]]],
    ) -> Principal:
        try:
            principal, expires_at = await verify()
            self.put(slot[0], principal, slot[1], expires_at)
            return principal
        finally:
            if self._in_flight.get(slot) is asyncio.current_task():
                del self._in_flight[slot]

    def invalidate(self) -> None:
        """A credential may have been revoked: no entry verified before now is used again."""
        self.counter.bump()
        with self._lock:
            self._entries.clear()
