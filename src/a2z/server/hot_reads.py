"""The hot list reads (``GET /api/v1/events``, ``GET /api/v1/agents``) answered before FastAPI.

Dashboards poll these pages and analysts page through searches. FastAPI's routing, dependency
solving and response validation cost more CPU than the page's query (docs/adr/0017), so this
pure ASGI layer answers their common shape itself — a cached credential whose role may read,
``limit`` and ``cursor``, and on the events page its filters, each in its plainest valid
spelling — with the same page functions the routes call. A filter is checked by the rules the
route's own signature declares (query_rules.py) and built by the route's own dependency.
Everything else (a credential not yet cached, a value the route would refuse or parse
differently, a repeated or unknown parameter, any error) passes to the FastAPI route, which
stays the documented, validating implementation: this layer can only answer what the route
would have answered.

The encoded unfiltered pages are kept per tenant in the page cache (page_cache.py, ADR 0022)
until a write of the tenant or the TTL ends them; a hit is answered on the event loop without a
thread hop, after the credential was looked up and its role checked like every other request's.
A filtered page is read each time: its ``since`` moves with every request of a polling client.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from anyio import CapacityLimiter, to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from a2z.server.agents.views import agents_page
from a2z.server.auth.policy import Permission, allows
from a2z.server.auth.principal import Principal
from a2z.server.context import ServerContext
from a2z.server.deps import bearer_token
from a2z.server.errors import A2ZServerError
from a2z.server.events.search import EventFilter
from a2z.server.events.views import event_filter, events_page
from a2z.server.page_cache import Page, PageKey
from a2z.server.query_rules import QueryRule, rules_of

# The spellings FastAPI parses the same way we do: decimal digits without sign, blank or
# leading zero; a cursor as CursorParam's pattern and length. Anything else goes to the route.
_LIMIT = re.compile(r"[1-9][0-9]{0,3}")
_CURSOR = re.compile(r"[A-Za-z0-9_=:.-]{1,300}")
_NO_FILTER = EventFilter()
_QUERIES = 256  # query strings whose parse is remembered per route (dashboards send a few)

Filters = dict[str, str | int]  # the route's filter parameters, checked, by name
PageFunction = Callable[[ServerContext, Principal, int, str | None, EventFilter], dict[str, Any]]
Arguments = tuple[int, str | None, EventFilter]


@dataclass(frozen=True, slots=True)
class HotRead:
    """One route's page function, its ``limit`` bounds (as the route declares them) and the
    dependency that builds its filter (None: the route takes no filter), with its rules."""

    page: PageFunction
    default_limit: int
    max_limit: int
    make_filter: Callable[..., Awaitable[EventFilter]] | None = None
    filters: dict[str, QueryRule] = field(init=False)

    def __post_init__(self) -> None:
        rules = rules_of(self.make_filter) if self.make_filter is not None else {}
        object.__setattr__(self, "filters", rules)


def _events(
    ctx: ServerContext, principal: Principal, limit: int, cursor: str | None, flt: EventFilter
) -> dict[str, Any]:
    return events_page(ctx, principal, limit=limit, cursor=cursor, flt=flt)


def _agents(
    ctx: ServerContext, principal: Principal, limit: int, cursor: str | None, _flt: EventFilter
) -> dict[str, Any]:
    return agents_page(ctx, principal, limit=limit, cursor=cursor)


ROUTES = {
    "/api/v1/events": HotRead(_events, default_limit=100, max_limit=1000, make_filter=event_filter),
    "/api/v1/agents": HotRead(_agents, default_limit=50, max_limit=500),
}


def page_arguments(query: bytes, route: HotRead) -> tuple[int, str | None, Filters] | None:
    """``(limit, cursor, filters)`` from a query string, or None when the route must decide."""
    limit, cursor = route.default_limit, None
    filters: Filters = {}
    if not query:
        return limit, cursor, filters
    seen: set[str] = set()
    # As Starlette reads it (latin-1, blanks kept), so both see the same names and values.
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return None
        seen.add(name)
        if name == "limit" and _LIMIT.fullmatch(value) and int(value) <= route.max_limit:
            limit = int(value)
        elif name == "cursor" and _CURSOR.fullmatch(value):
            cursor = value
        elif (rule := route.filters.get(name)) is not None:
            checked = rule.value(value)
            if checked is None:
                return None
            filters[name] = checked
        else:
            return None
    return limit, cursor, filters


class HotReads:
    """ASGI middleware: answers ``ROUTES`` in their common shape, passes everything else on."""

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app = app
        self.ctx = ctx
        self._encode = msgspec.json.Encoder().encode
        # At most as many reads in threads as the store has connections: more threads only
        # queue for connections while contending for the GIL, which costs latency (p99 158 ms
        # with 4 threads against 946 ms with 40 in the floor, docs/benchmarks.md, API).
        self._limiter = CapacityLimiter(ctx.settings.pool_size)
        self._answered = {path: ctx.metrics.hot_reads.labels(path) for path in ROUTES}
        # Parsed query strings per route: the same few arrive again and again, and parse_qsl
        # costs more than the rest of a cache hit's own work.
        self._queries: dict[str, dict[bytes, Arguments | None]] = {path: {} for path in ROUTES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        route = ROUTES.get(path)
        if route is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        principal = self._reader(scope)
        arguments = None
        if principal is not None:
            arguments = await self._arguments(path, scope["query_string"], route)
        if principal is None or arguments is None:
            await self.app(scope, receive, send)
            return
        pages = self.ctx.pages
        limit, cursor, flt = arguments
        if pages.enabled and flt == _NO_FILTER:
            key: PageKey = (principal.tenant_id, path, limit, cursor)
            page = await pages.page(key, lambda: self._render(route, principal, arguments))
        else:
            page = await self._render(route, principal, arguments)
        if page is None:  # the page function declined: the route words the problem
            await self.app(scope, receive, send)
            return
        self._answered[path].inc()
        await send(page.start)
        await send(page.body)

    async def _render(
        self, route: HotRead, principal: Principal, arguments: Arguments
    ) -> Page | None:
        """The page read in the thread pool and encoded; None where the route must answer."""
        try:
            body = await to_thread.run_sync(
                route.page, self.ctx, principal, *arguments, limiter=self._limiter
            )
        except A2ZServerError:  # e.g. a cursor of another route
            return None
        return Page.of(self._encode(body))

    async def _arguments(self, path: str, query: bytes, route: HotRead) -> Arguments | None:
        known = self._queries[path]
        try:
            return known[query]
        except KeyError:
            pass
        arguments: Arguments | None = None
        parsed = page_arguments(query, route)
        if parsed is not None:
            limit, cursor, filters = parsed
            try:  # the route's own dependency builds the filter (times, blocks, ranges)
                make = route.make_filter
                flt = await make(**filters) if make is not None and filters else _NO_FILTER
                arguments = (limit, cursor, flt)
            except A2ZServerError:  # e.g. since after until: the route words the refusal
                arguments = None
        if len(known) >= _QUERIES:  # cursors and times make new strings without end: start over
            known.clear()
        known[query] = arguments
        return arguments

    def _reader(self, scope: Scope) -> Principal | None:
        """The caller if its credential is in the principal cache and its role may read.

        A cache miss goes to the route, which verifies the credential (and caches it).
        """
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":  # the first, as Starlette's request.headers.get
                authorization = value.decode("latin-1")
                break
        try:
            token = bearer_token(authorization)
        except A2ZServerError:
            return None
        cache = self.ctx.principals
        principal = cache.get(cache.key(token))
        if principal is None or not allows(principal.role, Permission.READ):
            return None
        return principal
