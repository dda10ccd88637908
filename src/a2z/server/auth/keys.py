"""API keys: ``a2z_<prefix>_<secret>``; the prefix finds the row, the SHA-256 proves the key.

A fast hash is right here (unlike passwords): keys carry 256 bits of randomness, so there is
nothing to brute-force, and every API call verifies one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from sqlalchemy import select

from a2z.server.auth.models import ApiKey
from a2z.server.auth.principal import Principal
from a2z.server.errors import Unauthenticated
from a2z.server.store.base import utcnow
from a2z.server.store.session import ScopedSession
from a2z.server.tenants.models import Role

KEY_PREFIX = "a2z_"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    *, session: ScopedSession, role: Role, agent_id: uuid.UUID | None = None
) -> tuple[ApiKey, str]:
    """Create a key in the session's tenant; return the row and the only copy of the secret."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        tenant_id=session.tenant_id,
        prefix=prefix,
        secret_hash=_digest(key),
        role=role.value,
        agent_id=agent_id,
    )
    session.add(row)
    session.flush()
    return row, key


def authenticate_api_key(*, session: ScopedSession, key: str) -> Principal:
    """Resolve a presented key (system session: the tenant is what we are finding out)."""
    parts = key.split("_")
    if len(parts) < 3 or not key.startswith(KEY_PREFIX):
        raise Unauthenticated("malformed API key")
    rows = session.scalars(select(ApiKey).where(ApiKey.prefix == parts[1])).all()
    digest = _digest(key)
    for row in rows:
        if hmac.compare_digest(row.secret_hash, digest) and row.revoked_at is None:
            row.last_used_at = utcnow()
            return Principal(
                tenant_id=row.tenant_id,
                subject=str(row.id),
                role=Role(row.role),
                agent_id=row.agent_id,
            )
    raise Unauthenticated("unknown or revoked API key")
