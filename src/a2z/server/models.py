"""Every model, imported in one place so the metadata is complete for schema creation."""

from a2z.server.agents.models import Agent
from a2z.server.auth.models import ApiKey
from a2z.server.events.models import Event
from a2z.server.tenants.models import Role, Tenant, User

__all__ = ["Agent", "ApiKey", "Event", "Role", "Tenant", "User"]
