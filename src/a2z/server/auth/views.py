"""Login, refresh, logout, tenant switch and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import Field

from a2z.server.audit import service as audit
from a2z.server.auth import keys
from a2z.server.auth import service as auth
from a2z.server.auth.policy import may_assign
from a2z.server.auth.tokens import ACCESS_TTL_S
from a2z.server.deps import Authenticated, Context, KeyAdmin, Source
from a2z.server.errors import Forbidden, NotFound
from a2z.server.schemas import Body, CursorParam, Limit, Out
from a2z.server.store.base import utcnow
from a2z.server.tenants.models import Role

router = APIRouter(prefix="/api/v1", tags=["auth"])


class LoginIn(Body):
    """Email and password; ``tenant_id`` picks one of several tenants (MSSP operators)."""

    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    tenant_id: uuid.UUID | None = None


class RefreshIn(Body):
    """A refresh token from login or the previous refresh."""

    refresh_token: str = Field(max_length=300)


class SwitchIn(Body):
    """The tenant to switch to."""

    tenant_id: uuid.UUID


class TenantChoiceOut(Out):
    """A tenant the user belongs to."""

    id: uuid.UUID
    name: str
    role: Role


class TokensOut(Out):
    """Bearer access token plus rotating refresh token."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = ACCESS_TTL_S
    tenant_id: uuid.UUID
    role: Role
    tenants: list[TenantChoiceOut]


class MeOut(Out):
    """The caller as the server sees it."""

    tenant_id: uuid.UUID
    actor: str
    role: Role


def _tokens(t: auth.Tokens) -> TokensOut:
    return TokensOut(
        access_token=t.access_token,
        refresh_token=t.refresh_token,
        tenant_id=t.tenant_id,
        role=t.role,
        tenants=[TenantChoiceOut(id=c.id, name=c.name, role=c.role) for c in t.tenants],
    )


@router.post("/auth/login")
def login(body: LoginIn, ctx: Context, source: Source) -> TokensOut:
    """Exchange an email and password for tokens (throttled per account and per address)."""
    return _tokens(
        auth.login(
            sessions=ctx.sessions,
            secret=ctx.secret,
            throttle=ctx.throttle,
            email=body.email,
            password=body.password,
            tenant_id=body.tenant_id,
            source=source,
        )
    )


@router.post("/auth/refresh")
def refresh(body: RefreshIn, ctx: Context, source: Source) -> TokensOut:
    """Rotate the refresh token; a token used twice revokes its session."""
    return _tokens(
        auth.refresh(
            sessions=ctx.sessions, secret=ctx.secret, token=body.refresh_token, source=source
        )
    )


@router.post("/auth/logout", status_code=204)
def logout(principal: Authenticated, ctx: Context, source: Source) -> Response:
    """End the caller's session: refresh and access tokens stop working."""
    auth.logout(sessions=ctx.sessions, principal=principal, source=source)
    return Response(status_code=204)


@router.post("/auth/switch")
def switch(body: SwitchIn, principal: Authenticated, ctx: Context, source: Source) -> TokensOut:
    """New tokens for another tenant the caller belongs to; 404 for any other tenant."""
    return _tokens(
        auth.switch_tenant(
            sessions=ctx.sessions,
            secret=ctx.secret,
            principal=principal,
            tenant_id=body.tenant_id,
            source=source,
        )
    )


@router.get("/auth/me")
def me(principal: Authenticated) -> MeOut:
    """Who the server thinks the caller is."""
    return MeOut(tenant_id=principal.tenant_id, actor=principal.actor, role=principal.role)


class ApiKeyIn(Body):
    """A new API key."""

    name: str = Field(default="", max_length=200)
    role: Role


class ApiKeyOut(Out):
    """An API key without its secret."""

    id: uuid.UUID
    name: str
    role: Role
    agent_id: uuid.UUID | None
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A new key: the secret is shown this once."""

    key: str


class ApiKeyPage(Out):
    """One page of keys."""

    items: list[ApiKeyOut]
    next_cursor: str | None


@router.get("/api-keys")
def list_api_keys(
    principal: KeyAdmin, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> ApiKeyPage:
    """The tenant's API keys."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = keys.list_page(session=session, limit=limit, cursor=cursor)
        return ApiKeyPage(
            items=[ApiKeyOut.model_validate(k) for k in page.items], next_cursor=page.next_cursor
        )


@router.post("/api-keys", status_code=201)
def create_api_key(
    body: ApiKeyIn, principal: KeyAdmin, ctx: Context, source: Source
) -> ApiKeyCreated:
    """Create a key with a role no higher than the caller's."""
    if not may_assign(principal.role, body.role):
        raise Forbidden(f"role {principal.role.value!r} may not create {body.role.value!r} keys")
    with ctx.sessions.tenant(principal.tenant_id) as session:
        row, secret = keys.create_api_key(
            session=session, role=body.role, name=body.name, created_by=principal.actor
        )
        audit.record(
            session=session,
            actor=principal.actor,
            action="api_key.create",
            target=f"key:{row.id}",
            source=source,
            detail={"role": body.role.value},
        )
        return ApiKeyCreated(**ApiKeyOut.model_validate(row).model_dump(), key=secret)


@router.get("/api-keys/{key_id}")
def get_api_key(key_id: uuid.UUID, principal: KeyAdmin, ctx: Context) -> ApiKeyOut:
    """One key."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        row = keys.get(session=session, key_id=key_id)
        if row is None:
            raise NotFound("no such API key")
        return ApiKeyOut.model_validate(row)


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(
    key_id: uuid.UUID, principal: KeyAdmin, ctx: Context, source: Source
) -> Response:
    """Revoke a key; it stops working at once. The row stays for the audit trail."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        row = keys.get(session=session, key_id=key_id)
        if row is None:
            raise NotFound("no such API key")
        row.revoked_at = row.revoked_at or utcnow()
        audit.record(
            session=session,
            actor=principal.actor,
            action="api_key.revoke",
            target=f"key:{row.id}",
            source=source,
        )
    return Response(status_code=204)
