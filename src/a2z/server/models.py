"""Every model, imported in one place so the metadata is complete for migrations."""

from a2z.server.agents.models import Agent, EnrollmentToken
from a2z.server.audit.models import AuditEvent
from a2z.server.auth.models import ApiKey, AuthSession
from a2z.server.events.models import Event
from a2z.server.pki.models import AgentCert, TenantCA
from a2z.server.rules.models import RuleVersion, TenantRule
from a2z.server.tenants.models import Membership, Role, Tenant, User

__all__ = [
    "Agent",
    "AgentCert",
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "EnrollmentToken",
    "Event",
    "Membership",
    "Role",
    "RuleVersion",
    "Tenant",
    "TenantCA",
    "TenantRule",
    "User",
]
