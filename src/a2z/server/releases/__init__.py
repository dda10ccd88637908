"""Agent releases: signed packages the agents upgrade to."""
