"""Threat intelligence in the backend: stored indicator sets (per tenant and global), warning
lists, their versions, the API, and the deltas agents follow (ADR 12)."""
