"""Short-lived access tokens: HS256 JWTs with fixed issuer and audience."""

from __future__ import annotations

import time
import uuid

import jwt

from a2z.server.auth.principal import Principal
from a2z.server.errors import Unauthenticated
from a2z.server.tenants.models import Role

ISSUER = "a2z-soc"
AUDIENCE = "a2z-api"
ACCESS_TTL_S = 15 * 60
_ALGORITHM = "HS256"


def issue_access_token(secret: bytes, principal: Principal, *, now: float | None = None) -> str:
    """Sign a token carrying the principal's tenant, subject and role."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": principal.subject,
        "tid": str(principal.tenant_id),
        "role": principal.role.value,
        "iat": issued,
        "exp": issued + ACCESS_TTL_S,
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_access_token(secret: bytes, token: str) -> Principal:
    """Check signature, algorithm, issuer, audience and expiry; return the principal."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],  # pinned: refuses alg=none and algorithm confusion
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
        return Principal(
            tenant_id=uuid.UUID(claims["tid"]),
            subject=str(claims["sub"]),
            role=Role(claims["role"]),
        )
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise Unauthenticated("invalid or expired access token") from exc
