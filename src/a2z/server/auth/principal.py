"""The authenticated caller: who, which tenant, what role. The tenant always comes from here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from a2z.server.tenants.models import Role


@dataclass(frozen=True, slots=True)
class Principal:
    """A person (via access token) or a machine (via API key) acting within one tenant."""

    tenant_id: uuid.UUID
    subject: str  # user id or api-key id
    role: Role
    agent_id: uuid.UUID | None = None  # set when the principal is an agent
