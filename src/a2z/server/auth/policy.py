"""Who may do what: the single table of role permissions (deny by default)."""

from __future__ import annotations

import enum

from a2z.server.tenants.models import Role


class Permission(enum.StrEnum):
    """Actions routes require."""

    READ = "read"  # events, agents, own profile
    MANAGE_AGENTS = "manage_agents"  # rename/delete agents, enrollment tokens
    MANAGE_KEYS = "manage_keys"  # API keys
    MANAGE_USERS = "manage_users"  # memberships
    READ_AUDIT = "read_audit"
    MANAGE_TENANTS = "manage_tenants"  # list granted tenants, create tenants (MSSP)
    INGEST = "ingest"  # send record batches over HTTP (agent-bound keys)
    MANAGE_RULES = "manage_rules"  # create, change, enable/disable, archive detection rules
    TEST_RULES = "test_rules"  # validate rules and dry-run them over stored records
    MANAGE_INTEL = "manage_intel"  # import and delete indicators, edit the warning list


_ADMINS = {Role.OWNER, Role.ADMIN, Role.OPERATOR}
GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.READ: frozenset(_ADMINS | {Role.ANALYST, Role.VIEWER}),
    Permission.MANAGE_AGENTS: frozenset(_ADMINS),
    Permission.MANAGE_KEYS: frozenset(_ADMINS),
    Permission.MANAGE_USERS: frozenset(_ADMINS),
    Permission.READ_AUDIT: frozenset(_ADMINS),
    Permission.MANAGE_TENANTS: frozenset({Role.OPERATOR}),
    Permission.INGEST: frozenset({Role.AGENT}),
    Permission.MANAGE_RULES: frozenset(_ADMINS),
    # Analysts write detections, so they may try them; a dry run scans many records, so
    # viewers (read-only dashboards) may not.
    Permission.TEST_RULES: frozenset(_ADMINS | {Role.ANALYST}),
    Permission.MANAGE_INTEL: frozenset(_ADMINS),
}

# Roles a principal may hand out (to users or keys): never more than it holds.
ASSIGNABLE: dict[Role, frozenset[Role]] = {
    Role.OWNER: frozenset({Role.OWNER, Role.ADMIN, Role.ANALYST, Role.VIEWER}),
    Role.OPERATOR: frozenset({Role.OWNER, Role.ADMIN, Role.ANALYST, Role.VIEWER}),
    Role.ADMIN: frozenset({Role.ADMIN, Role.ANALYST, Role.VIEWER}),
}


def allows(role: Role, permission: Permission) -> bool:
    """True when ``role`` holds ``permission``."""
    return role in GRANTS[permission]


def may_assign(granter: Role, role: Role) -> bool:
    """True when ``granter`` may give ``role`` to someone (or touch someone who has it)."""
    return role in ASSIGNABLE.get(granter, frozenset())
