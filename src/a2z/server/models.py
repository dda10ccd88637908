"""Every model, imported in one place so the metadata is complete for migrations."""

from a2z.server.agents.commands.models import AgentCommand
from a2z.server.agents.config.models import AgentGroup, ConfigVersion
from a2z.server.agents.models import Agent, EnrollmentToken
from a2z.server.audit.models import AuditEvent
from a2z.server.auth.models import ApiKey, AuthSession, LoginFailure
from a2z.server.events.models import (
    Event,
    EventBatch,
    EventRollup,
    EventTextBlock,
    RollupDay,
    StoredUsage,
)
from a2z.server.intel.models import (
    GlobalIndicator,
    GlobalIntelState,
    GlobalWarning,
    TenantIndicator,
    TenantIntelState,
    TenantWarning,
)
from a2z.server.pki.models import AgentCert, TenantCA
from a2z.server.quotas.models import RateBucket
from a2z.server.releases.models import AgentRelease
from a2z.server.rules.models import RuleVersion, TenantRule
from a2z.server.tenants.models import Membership, Role, Tenant, User

__all__ = [
    "Agent",
    "AgentCert",
    "AgentCommand",
    "AgentGroup",
    "AgentRelease",
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "ConfigVersion",
    "EnrollmentToken",
    "Event",
    "EventBatch",
    "EventRollup",
    "EventTextBlock",
    "GlobalIndicator",
    "GlobalIntelState",
    "GlobalWarning",
    "LoginFailure",
    "Membership",
    "RateBucket",
    "Role",
    "RollupDay",
    "RuleVersion",
    "StoredUsage",
    "Tenant",
    "TenantCA",
    "TenantIndicator",
    "TenantIntelState",
    "TenantRule",
    "TenantWarning",
    "User",
]
