"""Rendered hot pages per tenant, for the hot read path (docs/adr/0022-hot-read-page-cache.md).

A dashboard polls the same few pages (the newest events, the agents) many times a second, and
each poll costs a database transaction even when nothing changed. The cache keeps the encoded
JSON of such a page, keyed by everything that chooses the answer — tenant, route, ``limit``,
``cursor`` — and serves it again while both hold:

- **no write since**: every commit that may change a tenant's rows bumps that tenant's *write
  generation* (the session factory's ``watch_writes``, wired in ``app.build_context``), and an
  entry is used only while the generation equals the value read *before* its page was rendered.
  The generations live in a memory-mapped file of the data directory (``page-generations``,
  ``counters.SharedCounters``), so a write committed by any process on the directory (another
  ``--workers`` process, an ingest worker, ``a2z admin``) is seen on the next request, and the
  bump happens before the writer answers: a client told its write succeeded reads it back.
- **younger than the TTL** (``--hot-read-ttl-ms``, default 1000 ms): the bound on staleness for
  writers that cannot bump this file (a process on another host), and for what changes with
  time alone (an agent turning "offline"). The first request after the TTL renders the page
  again; others arriving meanwhile get the expired page until it lands, so the bound is the TTL
  plus one render. After a write nothing old is served: requests wait for the new render.

Authentication is not cached here: the hot path looks the principal up (and checks its role)
for every request before it asks the cache, so revocations and role changes keep taking effect
on the next request (principal_cache.py).

Concurrent misses of one key under one generation share a single render (the first renders,
the others await it), so a write under load costs one query per page, not one per waiting
client.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from a2z.server.counters import SharedCounters
from a2z.server.metrics import ServerMetrics

SLOTS = 4096  # generation words in the file (32 KiB); tenants share a word only by hash
DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_BYTES = 64 * 2**20  # a 1,000-event page is ~0.5 MB: at least ~128 of those

PageKey = tuple[uuid.UUID, str, int, str | None]  # tenant, route path, limit, cursor
_JSON = (b"content-type", b"application/json")


class PageGenerations:
    """Per-tenant write generations, shared through ``SharedCounters``.

    Slot 0 counts writes that may touch every tenant (a system transaction writing tenant-owned
    rows); each tenant hashes to one of the other slots. A tenant's generation is the sum of
    both: counters only grow, so the sum changes whenever either does. Two tenants sharing a
    slot only invalidate each other's pages more often than needed, never less.
    """

    def __init__(self, path: Path | None = None, slots: int = SLOTS) -> None:
        self._counters = SharedCounters(path, slots)
        self._tenant_slots = slots - 1

    def _slot(self, tenant_id: uuid.UUID) -> int:
        return 1 + tenant_id.int % self._tenant_slots

    def read(self, tenant_id: uuid.UUID) -> int:
        """The tenant's current generation."""
        return self._counters.read(0) + self._counters.read(self._slot(tenant_id))

    def bump(self, tenant_id: uuid.UUID | None) -> None:
        """A write of ``tenant_id``'s rows committed (None: possibly every tenant's)."""
        self._counters.bump(0 if tenant_id is None else self._slot(tenant_id))


@dataclass(frozen=True, slots=True)
class Page:
    """One encoded answer, with the ASGI messages that send it.

    The messages are built once and sent for every hit: uvicorn and Starlette only read them.
    """

    start: dict[str, object]
    body: dict[str, object]

    @classmethod
    def of(cls, encoded: bytes) -> Page:
        headers = [_JSON, (b"content-length", str(len(encoded)).encode())]
        return cls(
            start={"type": "http.response.start", "status": 200, "headers": headers},
            body={"type": "http.response.body", "body": encoded},
        )

    @property
    def size(self) -> int:
        body = self.body["body"]
        return len(body) if isinstance(body, bytes) else 0


@dataclass(frozen=True, slots=True)
class _Entry:
    page: Page
    generation: int  # the tenant's write generation read before the page was rendered
    deadline: float  # time.monotonic() after which the entry is too old (TTL)


@dataclass(frozen=True, slots=True)
class _Render:
    generation: int
    done: asyncio.Future[Page | None]  # None: the render failed, go to the route


class _RouteMetrics:
    """A route's metric children, resolved once: ``labels()`` per request costs more than the
    dictionary lookup a hit is."""

    def __init__(self, metrics: ServerMetrics, path: str) -> None:
        self.hits = metrics.page_cache_hits.labels(path)
        self.misses = metrics.page_cache_misses.labels(path)
        self.coalesced = metrics.page_cache_coalesced.labels(path)


class PageCache:
    """The encoded hot pages of this process, valid while their tenant's generation holds."""

    def __init__(
        self,
        generations: PageGenerations,
        ttl_s: float,
        metrics: ServerMetrics | None = None,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.generations = generations
        self.ttl_s = ttl_s
        self._metrics = metrics or ServerMetrics()
        self._invalidations: Counter = self._metrics.page_cache_invalidations
        self._routes: dict[str, _RouteMetrics] = {}
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: dict[PageKey, _Entry] = {}
        self._renders: dict[PageKey, _Render] = {}

    @property
    def enabled(self) -> bool:
        """False with a TTL of 0: every hot read renders its page (as before ADR 0022)."""
        return self.ttl_s > 0

    def invalidate(self, tenant_id: uuid.UUID | None) -> None:
        """A write of ``tenant_id`` (None: any tenant) committed: wired to ``watch_writes``.

        Runs in whichever thread committed; bumping the shared generation is all it does, so
        every process's entries of that tenant stop being used at once.
        """
        self.generations.bump(tenant_id)
        self._invalidations.inc()

    def _route(self, path: str) -> _RouteMetrics:
        route = self._routes.get(path)
        if route is None:
            route = self._routes[path] = _RouteMetrics(self._metrics, path)
        return route

    async def page(self, key: PageKey, render: Callable[[], Awaitable[Page | None]]) -> Page | None:
        """The cached page for ``key``, else ``render()``'s (shared by concurrent misses).

        Runs on the event loop only: the entries need no lock. A hit does no I/O and awaits
        nothing. None when the render declined (the caller passes the request to the route).
        """
        tenant_id, path = key[0], key[1]
        generation = self.generations.read(tenant_id)
        entry = self._entries.get(key)
        pending = self._renders.get(key)
        if entry is not None:
            if entry.generation != generation:
                self._drop(key)  # a write since: never served again
            elif time.monotonic() < entry.deadline or (
                pending is not None and pending.generation == generation
            ):
                # Fresh; or only older than the TTL while its renewal already runs: then it is
                # served until the render lands (stale by at most the TTL plus one render), so
                # a TTL expiry does not make every request of a busy page wait for that render.
                self._route(path).hits.inc()
                return entry.page
        if pending is not None and pending.generation == generation:
            # Rendered under the generation we read, and started before we read it: no write
            # that answered before this request began is missing from it (see the ADR).
            self._route(path).coalesced.inc()
            return await asyncio.shield(pending.done)
        self._route(path).misses.inc()
        started = time.monotonic()
        mine = _Render(generation, asyncio.get_running_loop().create_future())
        self._renders[key] = mine
        page: Page | None = None
        try:
            page = await render()
        finally:
            # Waiters get the page, or None (they then go to the route themselves) if the
            # render failed or was cancelled.
            mine.done.set_result(page)
            if self._renders.get(key) is mine:
                del self._renders[key]
        if page is not None:
            self._put(key, _Entry(page, generation, started + self.ttl_s))
        return page

    def _put(self, key: PageKey, entry: _Entry) -> None:
        self._drop(key)
        while self._entries and (
            len(self._entries) >= self._max_entries
            or self._bytes + entry.page.size > self._max_bytes
        ):
            self._drop(next(iter(self._entries)))  # the oldest insertion
        if entry.page.size <= self._max_bytes:
            self._entries[key] = entry
            self._bytes += entry.page.size

    def _drop(self, key: PageKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.page.size

    def __len__(self) -> int:
        return len(self._entries)
