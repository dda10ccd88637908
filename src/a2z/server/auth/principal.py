"""The authenticated caller: who, which tenant, what role. The tenant always comes from here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from a2z.server.tenants.models import Role


@dataclass(frozen=True, slots=True)
class Principal:
    """A person (access token), a machine (API key) or an agent, acting within one tenant."""

    tenant_id: uuid.UUID
    actor: str  # "user:<id>", "key:<id>": what the audit log records
    role: Role
    user_id: uuid.UUID | None = None  # set for people
    session_id: uuid.UUID | None = None  # the login session an access token belongs to
    agent_id: uuid.UUID | None = None  # set when the principal is an agent
