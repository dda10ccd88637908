"""Short-lived access tokens: HS256 JWTs with fixed issuer and audience.

An access token names its login session (``sid``); the server checks on every request that the
session is live, so logout and refresh-token reuse take effect at once, not at expiry.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from a2z.server.errors import Unauthenticated

ISSUER = "a2z-soc"
AUDIENCE = "a2z-api"
ACCESS_TTL_S = 15 * 60
_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: float | None = None  # epoch seconds, from ``exp`` (set by verification)


def issue_access_token(secret: bytes, claims: AccessClaims, *, now: float | None = None) -> str:
    """Sign a token for one user, tenant and session."""
    issued = int(now if now is not None else time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(claims.user_id),
        "tid": str(claims.tenant_id),
        "sid": str(claims.session_id),
        "iat": issued,
        "exp": issued + ACCESS_TTL_S,
    }
    return jwt.encode(payload, secret, algorithm=_ALGORITHM)


def verify_access_token(secret: bytes, token: str) -> AccessClaims:
    """Check signature, algorithm, issuer, audience and expiry."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],  # pinned: refuses alg=none and algorithm confusion
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
        return AccessClaims(
            tenant_id=uuid.UUID(payload["tid"]),
            user_id=uuid.UUID(payload["sub"]),
            session_id=uuid.UUID(payload["sid"]),
            expires_at=float(payload["exp"]),
        )
    except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
        raise Unauthenticated("invalid or expired access token") from exc
