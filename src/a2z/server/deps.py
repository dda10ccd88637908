"""Request dependencies: the server context and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from a2z.server.auth.keys import KEY_PREFIX, authenticate_api_key
from a2z.server.auth.principal import Principal
from a2z.server.auth.tokens import verify_access_token
from a2z.server.context import ServerContext
from a2z.server.errors import Forbidden, Unauthenticated
from a2z.server.tenants.models import Role


def get_context(request: Request) -> ServerContext:
    """The app's wired services."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


Context = Annotated[ServerContext, Depends(get_context)]


def authenticate_bearer(ctx: ServerContext, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer`` header holding an access token or an API key."""
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise Unauthenticated("missing bearer credential")
    if credential.startswith(KEY_PREFIX):
        with ctx.sessions.system() as session:
            return authenticate_api_key(session=session, key=credential)
    return verify_access_token(ctx.secret, credential)


def get_principal(request: Request, ctx: Context) -> Principal:
    """The caller, from its bearer credential."""
    try:
        return authenticate_bearer(ctx, request.headers.get("authorization"))
    except Unauthenticated:
        ctx.metrics.auth_failures.labels("api").inc()
        raise


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency factory: the principal, if its role is one of ``roles``."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"role {principal.role.value!r} may not do this")
        return principal

    return check


HUMAN_ROLES = (Role.OWNER, Role.ADMIN, Role.ANALYST, Role.VIEWER)
Reader = Annotated[Principal, Depends(require(*HUMAN_ROLES))]
