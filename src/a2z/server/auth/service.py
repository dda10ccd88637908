"""Authentication flows: password login, refresh rotation, logout, tenant switch, API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from a2z.server.audit import service as audit
from a2z.server.auth import credentials
from a2z.server.auth.models import ApiKey, AuthSession
from a2z.server.auth.passwords import verify_password
from a2z.server.auth.principal import Principal
from a2z.server.auth.throttle import LoginThrottle
from a2z.server.auth.tokens import AccessClaims, issue_access_token, verify_access_token
from a2z.server.errors import NotFound, Unauthenticated
from a2z.server.store.base import utcnow
from a2z.server.store.session import SessionFactory
from a2z.server.tenants.models import Membership, Role, Tenant, User

REFRESH_TTL = timedelta(days=7)
_KEY_TOUCH_INTERVAL = timedelta(minutes=1)  # last_used_at is refreshed at most this often


@dataclass(frozen=True, slots=True)
class TenantChoice:
    """A tenant the user may switch to."""

    id: uuid.UUID
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a successful login or refresh hands back."""

    access_token: str
    refresh_token: str
    tenant_id: uuid.UUID
    role: Role
    tenants: list[TenantChoice]


def memberships(sessions: SessionFactory, user_id: uuid.UUID) -> list[TenantChoice]:
    with sessions.login(user_id) as session:
        rows = session.execute(
            select(Membership.tenant_id, Membership.role, Tenant.name)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(Membership.user_id == user_id)
            .order_by(Tenant.name)
        ).all()
    return [TenantChoice(tid, name, Role(role)) for tid, role, name in rows]


def login(
    *,
    sessions: SessionFactory,
    secret: bytes,
    throttle: LoginThrottle,
    email: str,
    password: str,
    tenant_id: uuid.UUID | None,
    source: str,
) -> Tokens:
    """Verify a password and open a login session in the chosen (or only/first) tenant."""
    account = email.strip().lower()
    throttle.check(account, source)
    with sessions.system() as session:
        user = session.scalars(select(User).where(User.email == account)).one_or_none()
        ok = verify_password(user.password_hash if user else None, password)
    choices = memberships(sessions, user.id) if user is not None and ok else []
    chosen = [c for c in choices if tenant_id is None or c.id == tenant_id][:1]
    if user is None or not ok or not chosen:
        throttle.failed(account, source)
        if user is not None:
            for choice in choices or memberships(sessions, user.id):
                with sessions.tenant(choice.id) as session:
                    audit.record(
                        session=session,
                        actor=f"user:{user.id}",
                        action="auth.login",
                        source=source,
                        outcome="failure",
                    )
        raise Unauthenticated("wrong email or password")
    throttle.succeeded(account)
    return _open_session(sessions, secret, user.id, chosen[0], choices, source, "auth.login")


def _open_session(
    sessions: SessionFactory,
    secret: bytes,
    user_id: uuid.UUID,
    choice: TenantChoice,
    choices: list[TenantChoice],
    source: str,
    action: str,
) -> Tokens:
    session_id = uuid.uuid4()
    refresh, refresh_hash = credentials.mint(credentials.REFRESH_TOKEN, choice.id, session_id)
    with sessions.tenant(choice.id) as session:
        session.add(
            AuthSession(
                tenant_id=choice.id,
                id=session_id,
                user_id=user_id,
                refresh_hash=refresh_hash,
                source=source[:64],
                expires_at=utcnow() + REFRESH_TTL,
            )
        )
        audit.record(
            session=session,
            actor=f"user:{user_id}",
            action=action,
            target=f"session:{session_id}",
            source=source,
        )
    access = issue_access_token(secret, AccessClaims(choice.id, user_id, session_id))
    return Tokens(access, refresh, choice.id, choice.role, choices)


def refresh(*, sessions: SessionFactory, secret: bytes, token: str, source: str) -> Tokens:
    """Trade a refresh token for new tokens; the old one stops working (rotation).

    Presenting an already-rotated token means it was copied: the whole session is revoked.
    """
    cred = credentials.parse(token, credentials.REFRESH_TOKEN)
    new_token, new_hash = credentials.mint(credentials.REFRESH_TOKEN, cred.tenant_id, cred.row_id)
    refused: str | None = None
    with sessions.tenant(cred.tenant_id) as session:
        row = session.get(AuthSession, (cred.tenant_id, cred.row_id))
        if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
            raise Unauthenticated("refresh token is invalid, expired or revoked")
        membership = session.get(Membership, (cred.tenant_id, row.user_id))
        if row.previous_hash and cred.matches(row.previous_hash):
            refused = "refresh token was already used; the session is revoked"
            audit.record(
                session=session,
                actor=f"user:{row.user_id}",
                action="auth.refresh_reuse",
                target=f"session:{row.id}",
                source=source,
                outcome="failure",
            )
        elif not cred.matches(row.refresh_hash):
            raise Unauthenticated("refresh token is invalid, expired or revoked")
        elif membership is None:
            refused = "no longer a member of this tenant"
        if refused or membership is None:
            row.revoked_at = utcnow()  # committed: the refusal must outlive this request
        else:
            row.previous_hash, row.refresh_hash = row.refresh_hash, new_hash
            role, user_id = Role(membership.role), row.user_id
    if refused or membership is None:
        raise Unauthenticated(refused or "session has ended")
    access = issue_access_token(secret, AccessClaims(cred.tenant_id, user_id, cred.row_id))
    return Tokens(access, new_token, cred.tenant_id, role, [])


def logout(*, sessions: SessionFactory, principal: Principal, source: str) -> None:
    """Revoke the caller's login session: its refresh token and access tokens stop working."""
    if principal.session_id is None:
        return
    with sessions.tenant(principal.tenant_id) as session:
        row = session.get(AuthSession, (principal.tenant_id, principal.session_id))
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()
        audit.record(
            session=session,
            actor=principal.actor,
            action="auth.logout",
            target=f"session:{principal.session_id}",
            source=source,
        )


def switch_tenant(
    *,
    sessions: SessionFactory,
    secret: bytes,
    principal: Principal,
    tenant_id: uuid.UUID,
    source: str,
) -> Tokens:
    """Open a session in another tenant the same user belongs to (MSSP operators)."""
    if principal.user_id is None:
        raise NotFound("no such tenant")
    choices = memberships(sessions, principal.user_id)
    chosen = [c for c in choices if c.id == tenant_id]
    if not chosen:
        raise NotFound("no such tenant")
    return _open_session(
        sessions, secret, principal.user_id, chosen[0], choices, source, "auth.switch_tenant"
    )


def authenticate_access_token(*, sessions: SessionFactory, secret: bytes, token: str) -> Principal:
    """Verify the JWT, then that its session is live and the membership still holds."""
    return authenticate_claims(sessions=sessions, claims=verify_access_token(secret, token))


def authenticate_claims(*, sessions: SessionFactory, claims: AccessClaims) -> Principal:
    """The principal of a verified access token, if its session is live and the membership
    still holds."""
    with sessions.tenant(claims.tenant_id) as session:
        row = session.get(AuthSession, (claims.tenant_id, claims.session_id))
        membership = session.get(Membership, (claims.tenant_id, claims.user_id))
        if row is None or row.revoked_at is not None or membership is None:
            raise Unauthenticated("session has ended")
        role = Role(membership.role)
    return Principal(
        tenant_id=claims.tenant_id,
        actor=f"user:{claims.user_id}",
        role=role,
        user_id=claims.user_id,
        session_id=claims.session_id,
    )


def authenticate_api_key(*, sessions: SessionFactory, token: str) -> Principal:
    """Resolve an API key (including agent keys) to its principal."""
    cred = credentials.parse(token, credentials.API_KEY)
    with sessions.tenant(cred.tenant_id) as session:
        row = session.get(ApiKey, (cred.tenant_id, cred.row_id))
        if row is None or row.revoked_at is not None or not cred.matches(row.secret_hash):
            raise Unauthenticated("unknown or revoked API key")
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at > _KEY_TOUCH_INTERVAL:
            row.last_used_at = now
        return Principal(
            tenant_id=cred.tenant_id,
            actor=f"key:{row.id}",
            role=Role(row.role),
            agent_id=row.agent_id,
        )
