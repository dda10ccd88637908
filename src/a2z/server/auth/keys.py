"""API key operations."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from a2z.server.auth import credentials
from a2z.server.auth.models import ApiKey
from a2z.server.store.pagination import Page, paginate
from a2z.server.store.session import ScopedSession
from a2z.server.tenants.models import Role


def create_api_key(
    *,
    session: ScopedSession,
    role: Role,
    name: str = "",
    agent_id: uuid.UUID | None = None,
    created_by: str = "",
) -> tuple[ApiKey, str]:
    """Create a key in the session's tenant; return the row and the only copy of the secret."""
    row_id = uuid.uuid4()
    token, token_hash = credentials.mint(credentials.API_KEY, session.tenant_id, row_id)
    row = ApiKey(
        tenant_id=session.tenant_id,
        id=row_id,
        name=name,
        secret_hash=token_hash,
        role=role.value,
        agent_id=agent_id,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, token


def list_page(*, session: ScopedSession, limit: int, cursor: str | None) -> Page[ApiKey]:
    """The tenant's keys, oldest first (agent keys included)."""
    return paginate(
        session, select(ApiKey), at=ApiKey.created_at, row_id=ApiKey.id, limit=limit, cursor=cursor
    )


def get(*, session: ScopedSession, key_id: uuid.UUID) -> ApiKey | None:
    """One key of the session's tenant."""
    return session.get(ApiKey, (session.tenant_id, key_id))
