"""Agent configuration: groups, immutable numbered config versions, the effective config."""
