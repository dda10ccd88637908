"""Tenant-bound bearer secrets: API keys, refresh tokens and enrollment tokens.

Format: ``<kind>_<tenant hex>_<row hex>_<random>``. The tenant part lets the server open the
right tenant's transaction before it reads anything (row-level security hides every other
tenant's rows, so there is no cross-tenant lookup to make); the row part finds the record; the
SHA-256 of the whole string proves it. A fast hash is right here, unlike for passwords: the
random part carries 256 bits, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from a2z.server.errors import Unauthenticated

API_KEY = "a2zk"
REFRESH_TOKEN = "a2zr"  # noqa: S105 - a prefix naming the kind, not a secret
ENROLLMENT_TOKEN = "a2ze"  # noqa: S105 - a prefix naming the kind, not a secret


@dataclass(frozen=True, slots=True)
class Credential:
    """A parsed secret: where to look, and the whole string to verify."""

    kind: str
    tenant_id: uuid.UUID
    row_id: uuid.UUID
    token: str

    def matches(self, stored_digest: str) -> bool:
        """Constant-time comparison with a stored digest."""
        return hmac.compare_digest(digest(self.token), stored_digest)


def digest(token: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(token.encode()).hexdigest()


def mint(kind: str, tenant_id: uuid.UUID, row_id: uuid.UUID) -> tuple[str, str]:
    """A new secret and its digest; the secret is shown once and never stored."""
    token = f"{kind}_{tenant_id.hex}_{row_id.hex}_{secrets.token_urlsafe(32)}"
    return token, digest(token)


def parse(token: str, *kinds: str) -> Credential:
    """Split a presented secret; Unauthenticated if it is not one of ``kinds``."""
    parts = token.split("_", 3)
    if len(parts) != 4 or parts[0] not in kinds:
        raise Unauthenticated("malformed credential")
    try:
        return Credential(parts[0], uuid.UUID(hex=parts[1]), uuid.UUID(hex=parts[2]), token)
    except ValueError as exc:
        raise Unauthenticated("malformed credential") from exc
