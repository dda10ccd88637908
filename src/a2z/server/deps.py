"""Request dependencies: the server context and the authenticated, authorised principal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant

from a2z.server.auth import credentials
from a2z.server.auth import service as auth
from a2z.server.auth.policy import Permission, allows
from a2z.server.auth.principal import Principal
from a2z.server.context import ServerContext
from a2z.server.errors import Forbidden, InvalidInput, Unauthenticated


def reject_unknown_query(request: Request) -> None:
    """422 for query parameters the route does not declare: in a search API a misspelt filter
    (``?tyep=dns``) must not be silently ignored and return everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(map(repr, unknown))}")


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def get_context(request: Request) -> ServerContext:
    """The app's wired services."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


Context = Annotated[ServerContext, Depends(get_context)]


def client_address(request: Request) -> str:
    """The peer address, for throttling and the audit log."""
    return request.client.host if request.client else ""


Source = Annotated[str, Depends(client_address)]


def authenticate_bearer(ctx: ServerContext, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer`` header holding an access token or an API key."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing bearer credential")
    if token.startswith(credentials.API_KEY + "_"):
        return auth.authenticate_api_key(sessions=ctx.sessions, token=token)
    return auth.authenticate_access_token(sessions=ctx.sessions, secret=ctx.secret, token=token)


def get_principal(request: Request, ctx: Context) -> Principal:
    """The caller, from its bearer credential."""
    try:
        return authenticate_bearer(ctx, request.headers.get("authorization"))
    except Unauthenticated:
        ctx.metrics.auth_failures.labels("api").inc()
        raise


def require(permission: Permission) -> Callable[[Principal], Principal]:
    """Dependency factory: the principal, if its role holds ``permission``."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
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
