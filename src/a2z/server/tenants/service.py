"""Tenant and user operations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from a2z.server.auth.passwords import hash_password, verify_password
from a2z.server.auth.principal import Principal
from a2z.server.errors import Conflict, Unauthenticated
from a2z.server.store.session import ScopedSession
from a2z.server.tenants.models import Role, Tenant, User


def create_tenant(*, session: ScopedSession, name: str) -> Tenant:
    """Create a tenant (system session)."""
    tenant = Tenant(name=name)
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"tenant {name!r} already exists") from exc
    return tenant


def get_tenant_by_name(*, session: ScopedSession, name: str) -> Tenant | None:
    """Look a tenant up by its unique name (system session)."""
    return session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()


def create_user(*, session: ScopedSession, email: str, password: str, role: Role) -> User:
    """Create a user in the session's tenant."""
    user = User(
        tenant_id=session.tenant_id,
        email=email.strip().lower(),
        password_hash=hash_password(password),
        role=role.value,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"user {email!r} already exists in this tenant") from exc
    return user


def authenticate_password(*, session: ScopedSession, email: str, password: str) -> Principal:
    """Check an email and password (system session: the tenant is what login finds out).

    An email that exists in several tenants cannot log in by password alone; it is refused
    rather than guessed, so one tenant's credentials can never open another's session.
    """
    users = session.scalars(select(User).where(User.email == email.strip().lower())).all()
    user = users[0] if len(users) == 1 else None
    if not verify_password(user.password_hash if user else None, password) or user is None:
        raise Unauthenticated("wrong email or password")
    return Principal(tenant_id=user.tenant_id, subject=str(user.id), role=Role(user.role))
