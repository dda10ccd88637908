"""Control messages that carry a tenant's detection rules to its agents (ADR 13).

Server to agent: ``rules``, the whole rule set the agent should run at the edge (not a diff).
Agent to server: ``rules_result``, what it did with one. Both are JSON text frames on the
agent channel, dispatched by ``type`` like the other control messages (records/control.py).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_RULES_PUSH_BYTES = 3 * 1024 * 1024  # a rules frame larger than this is not sent (the
# channel refuses frames over 4 MiB); the agent keeps its set and the server logs why
MAX_RULE_TEXT_BYTES = 64 * 1024  # one rule's text, as the rules API accepts it
MAX_PUSHED_RULES = 10_000

Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
RuleText = Annotated[str, msgspec.Meta(max_length=MAX_RULE_TEXT_BYTES)]
SigmaId = Annotated[str, msgspec.Meta(max_length=64)]


class PushedRule(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One Sigma rule for the edge."""

    id: SigmaId  # its Sigma id (what its alerts report as rule_id)
    yaml: RuleText  # the rule's text, as the tenant's effective set holds it


class RulesPush(msgspec.Struct, kw_only=True, frozen=True, tag="rules", tag_field="type"):
    """The rule set an agent should run, as a whole; ``digest`` is ``ruleset_digest`` of it."""

    version: int  # the digest's first 60 bits as a number (what the API shows)
    digest: Digest
    rules: Annotated[list[PushedRule], msgspec.Meta(max_length=MAX_PUSHED_RULES)]


class RulesResult(msgspec.Struct, kw_only=True, frozen=True, tag="rules_result", tag_field="type"):
    """What the agent did with a pushed rule set."""

    digest: str  # the pushed set this answers
    version: int
    applied: bool  # true: running it now; false: rejected, the previous set keeps running
    rules: int = 0  # rules in the set
    reason: str = ""  # why it was rejected (which rule, and the compiler's message)
