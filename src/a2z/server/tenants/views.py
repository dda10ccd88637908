"""Tenant routes (MSSP operators) and user routes (memberships of the caller's tenant)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import Field

from a2z.server.audit import service as audit
from a2z.server.auth import service as auth
from a2z.server.auth.policy import may_assign
from a2z.server.auth.principal import Principal
from a2z.server.context import ServerContext
from a2z.server.deps import Authenticated, Context, Operator, Source, UserAdmin
from a2z.server.errors import Forbidden, InvalidInput, NotFound
from a2z.server.events import usage
from a2z.server.schemas import Body, CursorParam, Limit, Out
from a2z.server.store.session import ScopedSession
from a2z.server.tenants import service as tenants
from a2z.server.tenants.models import Membership, Role, User

router = APIRouter(prefix="/api/v1", tags=["tenants"])


class TenantIn(Body):
    """A new tenant."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")


class TenantOut(Out):
    """A tenant."""

    id: uuid.UUID
    name: str
    created_at: datetime


class TenantPage(Out):
    """Tenants the operator was granted."""

    items: list[TenantOut]
    next_cursor: str | None


@router.get("/tenants")
def list_tenants(
    principal: Operator, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> TenantPage:
    """The tenants the calling operator holds a grant in."""
    assert principal.user_id is not None  # operators are people
    granted = [c.id for c in auth.memberships(ctx.sessions, principal.user_id)]
    with ctx.sessions.system() as session:
        page = tenants.list_tenants(session=session, ids=granted, limit=limit, cursor=cursor)
        return TenantPage(
            items=[TenantOut.model_validate(t) for t in page.items], next_cursor=page.next_cursor
        )


@router.post("/tenants", status_code=201)
def create_tenant(body: TenantIn, principal: Operator, ctx: Context, source: Source) -> TenantOut:
    """Create a tenant; the calling operator is granted it."""
    if principal.user_id is None:
        raise Forbidden("only a person can create tenants")
    with ctx.sessions.system() as session:
        tenant = tenants.create_tenant(session=session, name=body.name)
        out = TenantOut.model_validate(tenant)
    with ctx.sessions.tenant(tenant.id) as session:
        user = tenants.get_user(session=session, user_id=principal.user_id)
        tenants.add_member(session=session, user=user, role=Role.OPERATOR)
        audit.record(
            session=session,
            actor=principal.actor,
            action="tenant.create",
            target=f"tenant:{tenant.id}",
            source=source,
        )
    return out


class TenantSettingsIn(Body):
    """Operator settings of a tenant; only the fields sent change (null: unlimited / no region)."""

    retention_days: int | None = Field(default=None, ge=1, le=tenants.MAX_RETENTION_DAYS)
    region: str | None = Field(default=None, pattern=tenants.REGION.pattern, max_length=32)
    events_per_second: int | None = Field(default=None, ge=1, le=10_000_000)
    burst_events: int | None = Field(default=None, ge=1, le=100_000_000)
    max_stored_bytes: int | None = Field(default=None, ge=1, le=2**62)
    anomaly_threshold: float | None = Field(default=None, gt=0.0, le=1.0)


class TenantDetail(TenantOut):
    """A tenant with its retention, residency, limits and what it stores now."""

    retention_days: int
    region: str | None
    events_per_second: int | None
    burst_events: int | None
    max_stored_bytes: int | None
    anomaly_threshold: float | None  # the anomaly model's alert threshold; null: the default
    stored_events: int
    stored_bytes: int


def _granted_tenant(ctx: ServerContext, principal: Principal, tenant_id: uuid.UUID) -> None:
    """404 unless the caller is an operator granted ``tenant_id``: a tenant one may not
    administer does not exist for one (never 403, which would confirm it)."""
    if principal.user_id is None or principal.role is not Role.OPERATOR:
        raise NotFound("no such tenant")
    granted = {
        c.id for c in auth.memberships(ctx.sessions, principal.user_id) if c.role is Role.OPERATOR
    }
    if tenant_id not in granted:
        raise NotFound("no such tenant")


def _detail(ctx: ServerContext, tenant_id: uuid.UUID) -> TenantDetail:
    with ctx.sessions.system() as session:
        tenant = tenants.get_tenant(session=session, tenant_id=tenant_id)
        base = TenantOut.model_validate(tenant).model_dump()
        limits = {name: getattr(tenant, name) for name in tenants.SETTINGS}
    with ctx.sessions.tenant(tenant_id) as session:
        stored_events, stored_bytes = usage.totals(session=session)
    return TenantDetail(**base, **limits, stored_events=stored_events, stored_bytes=stored_bytes)


@router.get("/tenants/{tenant_id}")
def get_tenant(tenant_id: uuid.UUID, principal: Authenticated, ctx: Context) -> TenantDetail:
    """A tenant the calling operator was granted: retention, region, limits and usage."""
    _granted_tenant(ctx, principal, tenant_id)
    return _detail(ctx, tenant_id)


@router.patch("/tenants/{tenant_id}")
def update_tenant(
    tenant_id: uuid.UUID,
    body: TenantSettingsIn,
    principal: Authenticated,
    ctx: Context,
    source: Source,
) -> TenantDetail:
    """Set a granted tenant's retention (days), data-residency region and ingest limits.

    Limits apply in this process at once and in others within the quota refresh interval.
    """
    _granted_tenant(ctx, principal, tenant_id)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    if changes.get("retention_days", 1) is None:
        raise InvalidInput("retention_days cannot be null")
    with ctx.sessions.system() as session:
        diff = tenants.update_settings(session=session, tenant_id=tenant_id, changes=changes)
    if diff:
        with ctx.sessions.tenant(tenant_id) as session:
            audit.record(
                session=session,
                actor=principal.actor,
                action="tenant.update",
                target=f"tenant:{tenant_id}",
                source=source,
                detail=dict(diff),
            )
        ctx.quotas.reload(tenant_id)
    return _detail(ctx, tenant_id)


class UserIn(Body):
    """A new member: an existing user by email, or a new one with a password."""

    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str | None = Field(default=None, min_length=12, max_length=1024)
    role: Role


class UserUpdate(Body):
    """Fields a member's record allows changing."""

    role: Role


class UserOut(Out):
    """A member of the tenant."""

    id: uuid.UUID
    email: str
    role: Role
    created_at: datetime


class UserPage(Out):
    """One page of members."""

    items: list[UserOut]
    next_cursor: str | None


_PEOPLE_ROLES = {Role.OWNER, Role.ADMIN, Role.ANALYST, Role.VIEWER}


def _check_assignable(granter: Role, role: Role) -> None:
    if role not in _PEOPLE_ROLES:
        raise InvalidInput(f"role {role.value!r} cannot be given to a member here")
    if not may_assign(granter, role):
        raise Forbidden(f"role {granter.value!r} may not grant {role.value!r}")


@router.get("/users")
def list_users(
    principal: UserAdmin, ctx: Context, limit: Limit = 50, cursor: CursorParam = None
) -> UserPage:
    """Members of the caller's tenant."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        page = tenants.list_members(session=session, limit=limit, cursor=cursor)
        emails = tenants.emails(session=session, user_ids=[m.user_id for m in page.items])
        items = [
            UserOut(
                id=m.user_id, email=emails[m.user_id], role=Role(m.role), created_at=m.created_at
            )
            for m in page.items
        ]
    return UserPage(items=items, next_cursor=page.next_cursor)


@router.post("/users", status_code=201)
def create_user(body: UserIn, principal: UserAdmin, ctx: Context, source: Source) -> UserOut:
    """Add a member (creating the person if new)."""
    _check_assignable(principal.role, body.role)
    with ctx.sessions.tenant(principal.tenant_id) as session:
        user = tenants.ensure_user(session=session, email=body.email, password=body.password)
        member = tenants.add_member(session=session, user=user, role=body.role)
        audit.record(
            session=session,
            actor=principal.actor,
            action="user.create",
            target=f"user:{user.id}",
            source=source,
            detail={"role": body.role.value},
        )
        return UserOut(id=user.id, email=user.email, role=body.role, created_at=member.created_at)


def _member_or_404(session: ScopedSession, user_id: uuid.UUID) -> tuple[Membership, User]:
    found = tenants.get_member(session=session, user_id=user_id)
    if found is None:
        raise NotFound("no such user")
    return found


@router.get("/users/{user_id}")
def get_user(user_id: uuid.UUID, principal: UserAdmin, ctx: Context) -> UserOut:
    """One member."""
    with ctx.sessions.tenant(principal.tenant_id) as session:
        member, user = _member_or_404(session, user_id)
        return UserOut(
            id=user.id, email=user.email, role=Role(member.role), created_at=member.created_at
        )


@router.patch("/users/{user_id}")
def update_user(
    user_id: uuid.UUID, body: UserUpdate, principal: UserAdmin, ctx: Context, source: Source
) -> UserOut:
    """Change a member's role (never to more than the caller's, never the caller's own)."""
    _check_assignable(principal.role, body.role)
    if user_id == principal.user_id:
        raise Forbidden("you cannot change your own role")
    with ctx.sessions.tenant(principal.tenant_id) as session:
        member, user = _member_or_404(session, user_id)
        _check_assignable(principal.role, Role(member.role))
        before, member.role = member.role, body.role.value
        audit.record(
            session=session,
            actor=principal.actor,
            action="user.update",
            target=f"user:{user.id}",
            source=source,
            detail={"role": [before, body.role.value]},
        )
        return UserOut(id=user.id, email=user.email, role=body.role, created_at=member.created_at)


@router.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: uuid.UUID, principal: UserAdmin, ctx: Context, source: Source) -> Response:
    """Remove a member from the tenant; their sessions here end at once."""
    if user_id == principal.user_id:
        raise Forbidden("you cannot remove yourself")
    with ctx.sessions.tenant(principal.tenant_id) as session:
        member, user = _member_or_404(session, user_id)
        _check_assignable(principal.role, Role(member.role))
        session.delete(member)
        audit.record(
            session=session,
            actor=principal.actor,
            action="user.delete",
            target=f"user:{user.id}",
            source=source,
        )
    return Response(status_code=204)
