"""Request dependencies: the server context and the authenticated, authorised principal.

They are ``async def`` on purpose: FastAPI runs a sync dependency in the thread pool, one
hand-off per dependency per request, which cost a fifth of a read's CPU. Only a principal-cache
miss leaves the event loop (for the database lookup); everything else here is CPU-only.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from starlette.concurrency import run_in_threadpool

from a2z.server.auth import credentials
from a2z.server.auth import service as auth
from a2z.server.auth.policy import Permission, allows
from a2z.server.auth.principal import Principal
from a2z.server.auth.tokens import verify_access_token
from a2z.server.context import ServerContext
from a2z.server.errors import Forbidden, InvalidInput, Unauthenticated

# Query parameter names each route declares, computed once per route, not per request. Keyed
# by id() with a weak reference to check it: routes are unhashable, and an id is reused once
# its app is gone (tests build many apps).
_KNOWN_QUERY: dict[int, tuple[weakref.ref[object], frozenset[str]]] = {}


async def reject_unknown_query(request: Request) -> None:
    """422 for query parameters the route does not declare: in a search API a misspelt filter
    (``?tyep=dns``) must not be silently ignored and return everything."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if route is None or dependant is None:
        return
    cached = _KNOWN_QUERY.get(id(route))
    if cached is not None and cached[0]() is route:
        known = cached[1]
    else:
        known = frozenset(_query_names(dependant))
        _KNOWN_QUERY[id(route)] = (weakref.ref(route), known)
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(map(repr, unknown))}")


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def get_context(request: Request) -> ServerContext:
    """The app's wired services."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


Context = Annotated[ServerContext, Depends(get_context)]


async def client_address(request: Request) -> str:
    """The peer address, for throttling and the audit log."""
    return request.client.host if request.client else ""


Source = Annotated[str, Depends(client_address)]


def bearer_token(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer`` header."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing bearer credential")
    return token


def verify_bearer(ctx: ServerContext, token: str) -> tuple[Principal, float | None]:
    """Resolve an access token or an API key against the store (blocking: a thread's work).

    Also returns when the credential expires by itself (epoch seconds; None for API keys).
    """
    if token.startswith(credentials.API_KEY + "_"):
        return auth.authenticate_api_key(sessions=ctx.sessions, token=token), None
    claims = verify_access_token(ctx.secret, token)
    return auth.authenticate_claims(sessions=ctx.sessions, claims=claims), claims.expires_at


def authenticate_bearer(ctx: ServerContext, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer`` header holding an access token or an API key."""
    return verify_bearer(ctx, bearer_token(authorization))[0]


async def get_principal(request: Request, ctx: Context) -> Principal:
    """The caller, from its bearer credential: from the principal cache, else the store."""
    try:
        token = bearer_token(request.headers.get("authorization"))
        cache = ctx.principals
        key = cache.key(token)
        cached = cache.get(key)
        if cached is not None:
            return cached
        return await cache.verify_shared(
            key, functools.partial(run_in_threadpool, verify_bearer, ctx, token)
        )
    except Unauthenticated:
        ctx.metrics.auth_failures.labels("api").inc()
        raise


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency factory: the principal, if its role holds ``permission``."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not allows(principal.role, permission):
            raise Forbidden(f"role {principal.role.value!r} may not {permission.value}")
        return principal

    return check


Reader = Annotated[Principal, Depends(require(Permission.READ))]
AgentAdmin = Annotated[Principal, Depends(require(Permission.MANAGE_AGENTS))]
KeyAdmin = Annotated[Principal, Depends(require(Permission.MANAGE_KEYS))]
UserAdmin = Annotated[Principal, Depends(require(Permission.MANAGE_USERS))]
Auditor = Annotated[Principal, Depends(require(Permission.READ_AUDIT))]
Operator = Annotated[Principal, Depends(require(Permission.MANAGE_TENANTS))]
Ingester = Annotated[Principal, Depends(require(Permission.INGEST))]
RuleAdmin = Annotated[Principal, Depends(require(Permission.MANAGE_RULES))]
IntelAdmin = Annotated[Principal, Depends(require(Permission.MANAGE_INTEL))]
RuleTester = Annotated[Principal, Depends(require(Permission.TEST_RULES))]
Authenticated = Annotated[Principal, Depends(get_principal)]
