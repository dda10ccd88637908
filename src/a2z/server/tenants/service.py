"""Tenants, users and memberships."""

from __future__ import annotations

import re
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from a2z.server.auth.passwords import hash_password
from a2z.server.errors import Conflict, InvalidInput, NotFound
from a2z.server.store.pagination import Page, paginate
from a2z.server.store.session import ScopedSession
from a2z.server.tenants.models import Membership, Role, Tenant, User


def create_tenant(*, session: ScopedSession, name: str) -> Tenant:
    """Create a tenant (system session)."""
    tenant = Tenant(name=name)
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"tenant {name!r} already exists") from exc
    return tenant


MAX_RETENTION_DAYS = 3650
REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
SETTINGS = (
    "retention_days",
    "region",
    "events_per_second",
    "burst_events",
    "max_stored_bytes",
    "anomaly_threshold",
)
"""What an operator may set on a tenant (``update_settings``)."""


def get_tenant(*, session: ScopedSession, tenant_id: uuid.UUID) -> Tenant:
    """A tenant by id (system session); NotFound if none."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    return tenant


def update_settings(
    *, session: ScopedSession, tenant_id: uuid.UUID, changes: dict[str, int | float | str | None]
) -> dict[str, list[int | float | str | None]]:
    """Apply ``changes`` (keys from SETTINGS) to a tenant; returns ``{name: [before, after]}``.

    Retention must be at least one day; a limit of None means unlimited; an anomaly threshold
    of None means the model's default.
    """
    unknown = set(changes) - set(SETTINGS)
    if unknown:
        raise InvalidInput(f"not a tenant setting: {', '.join(sorted(unknown))}")
    days = changes.get("retention_days", 1)
    if not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise InvalidInput(f"retention_days must be 1 to {MAX_RETENTION_DAYS}")
    region = changes.get("region")
    if region is not None and not (isinstance(region, str) and REGION.match(region)):
        raise InvalidInput("region must be 1-32 of a-z, 0-9 and '-' (e.g. eu-west-1)")
    for name in ("events_per_second", "burst_events", "max_stored_bytes"):
        limit = changes.get(name)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidInput(f"{name} must be at least 1, or null for unlimited")
    threshold = changes.get("anomaly_threshold")
    if threshold is not None and not (
        isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0
    ):
        raise InvalidInput("anomaly_threshold must be in (0, 1], or null for the default")
    tenant = get_tenant(session=session, tenant_id=tenant_id)
    diff: dict[str, list[int | float | str | None]] = {}
    for name, value in changes.items():
        before = getattr(tenant, name)
        if before != value:
            setattr(tenant, name, value)
            diff[name] = [before, value]
    session.flush()
    return diff


def get_tenant_by_name(*, session: ScopedSession, name: str) -> Tenant | None:
    """Look a tenant up by its unique name (system session)."""
    return session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()


def list_tenants(
    *, session: ScopedSession, ids: list[uuid.UUID], limit: int, cursor: str | None
) -> Page[Tenant]:
    """The tenants among ``ids`` (those the caller was granted), oldest first."""
    stmt = select(Tenant).where(Tenant.id.in_(ids))
    return paginate(
        session, stmt, at=Tenant.created_at, row_id=Tenant.id, limit=limit, cursor=cursor
    )


def find_user(*, session: ScopedSession, email: str) -> User | None:
    """The user with ``email``, if any."""
    return session.scalars(select(User).where(User.email == email.strip().lower())).one_or_none()


def ensure_user(*, session: ScopedSession, email: str, password: str | None) -> User:
    """The user with ``email``, created if new (identities are global).

    An existing user's password is never changed here, and a new user without a password gets
    an unusable one (an invitation): either way the caller learns nothing about whether the
    email was already registered in some other tenant.
    """
    address = email.strip().lower()
    user = find_user(session=session, email=address)
    if user is None:
        secret = password if password is not None else secrets.token_urlsafe(32)
        user = User(email=address, password_hash=hash_password(secret))
        session.add(user)
        session.flush()
    return user


def add_member(*, session: ScopedSession, user: User, role: Role) -> Membership:
    """Give ``user`` a role in the session's tenant."""
    if session.get(Membership, (session.tenant_id, user.id)) is not None:
        raise Conflict(f"{user.email} is already a member of this tenant")
    membership = Membership(tenant_id=session.tenant_id, user_id=user.id, role=role.value)
    session.add(membership)
    session.flush()
    return membership


def create_user(*, session: ScopedSession, email: str, password: str, role: Role) -> User:
    """Create (or find) a user and make them a member of the session's tenant."""
    user = ensure_user(session=session, email=email, password=password)
    add_member(session=session, user=user, role=role)
    return user


def get_user(*, session: ScopedSession, user_id: uuid.UUID) -> User:
    """A user identity by id."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


def get_member(*, session: ScopedSession, user_id: uuid.UUID) -> tuple[Membership, User] | None:
    """A member of the session's tenant and their identity."""
    row = session.execute(
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.user_id == user_id)
    ).one_or_none()
    return (row[0], row[1]) if row else None


def list_members(*, session: ScopedSession, limit: int, cursor: str | None) -> Page[Membership]:
    """The tenant's memberships, oldest first."""
    return paginate(
        session,
        select(Membership),
        at=Membership.created_at,
        row_id=Membership.user_id,
        limit=limit,
        cursor=cursor,
    )


def emails(*, session: ScopedSession, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Email of each user id."""
    rows = session.execute(select(User.id, User.email).where(User.id.in_(user_ids))).all()
    return {uid: email for uid, email in rows}
