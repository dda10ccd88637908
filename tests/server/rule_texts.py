"""Sigma rule texts for the server's rule tests (and the role/isolation sweeps)."""

from __future__ import annotations

import uuid


def custom_rule(
    rule_id: uuid.UUID | str | None = None, *, query: str = "evil.test", level: str = "high"
) -> str:
    """A DNS rule matching one query name; a fresh id unless one is given."""
    return (
        f"title: Query for {query}\n"
        f"id: {rule_id or uuid.uuid4()}\n"
        "logsource:\n  category: dns\n"
        f"detection:\n  selection:\n    query: '{query}'\n  condition: selection\n"
        f"level: {level}\n"
    )
