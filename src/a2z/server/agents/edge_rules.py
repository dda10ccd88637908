"""Edge rules (ADR 13): which of the tenant's rules an agent should run, and what it runs.

An agent runs its tenant's *edge set*: the effective rule set (rules/service.py) without the
correlation rules, which need the whole tenant's stream and run in the detect role. The
``ruleset_version`` configuration field chooses which set: "" or "latest" follows the tenant's
rules; "off" runs none (an empty set is pushed, so rules pushed earlier stop); anything else
pins one set by its version number or a digest prefix (12 or more hex digits): the agent is
sent that set while it is the tenant's current one and keeps it after the rules move on.
Nothing here is stored per agent but what it reported, so a rule change needs no fan-out
write: the next time an agent is due anything, it is due the new set.
"""

from __future__ import annotations

import logging

from a2z.records import AgentSettings, PushedRule, RulesPush, RulesResult
from a2z.records.control import MAX_REASON_CHARS
from a2z.rules.catalog import Catalog, is_correlation, ruleset_digest, version_of
from a2z.server.agents.models import Agent
from a2z.server.rules.service import EffectiveRuleSet, effective_rules
from a2z.server.store.session import ScopedSession

log = logging.getLogger(__name__)

FOLLOW = ("", "latest")
OFF = "off"
MIN_PIN_PREFIX = 12  # hex digits of a digest a pin must give (48 bits: no accidental match)


def edge_set(effective: EffectiveRuleSet) -> RulesPush:
    """The part of a tenant's effective rules that runs at the edge, as a push."""
    rules = [
        PushedRule(id=rule.rule_id, yaml=rule.yaml)
        for rule in effective.rules
        if not is_correlation(rule.yaml)
    ]
    return _push(rules)


def _push(rules: list[PushedRule]) -> RulesPush:
    digest = ruleset_digest((r.id, r.yaml) for r in rules)
    return RulesPush(version=version_of(digest), digest=digest, rules=rules)


def pinned(pin: str, push: RulesPush) -> bool:
    """True if ``pin`` (a ``ruleset_version`` other than latest/off) names this set."""
    pin = pin.lower()
    if pin.isdigit():
        return int(pin) == push.version
    return len(pin) >= MIN_PIN_PREFIX and push.digest.startswith(pin)


def wanted(settings: AgentSettings, effective: EffectiveRuleSet) -> RulesPush | None:
    """The set an agent configured with ``settings`` should run now (None: keep its own)."""
    choice = settings.ruleset_version
    if choice == OFF:
        return _push([])
    current = edge_set(effective)
    if choice in FOLLOW or pinned(choice, current):
        return current
    return None


def due(
    *, session: ScopedSession, agent: Agent, settings: AgentSettings, catalog: Catalog
) -> RulesPush | None:
    """The set to push to ``agent``: one it wants, does not run and has not refused. None for
    an agent that has not said it takes rule sets (an older version, a bare channel client)."""
    if agent.rules_digest is None:
        return None
    push = wanted(settings, effective_rules(session=session, catalog=catalog))
    if push is None or push.digest in (agent.rules_digest, agent.rules_rejected_digest):
        return None
    return push


def record_result(*, agent: Agent, result: RulesResult) -> None:
    """Note what the agent did with a pushed set."""
    if result.applied:
        agent.rules_digest = result.digest[:64]
        if agent.rules_rejected_digest == result.digest:
            agent.rules_rejected_digest = agent.rules_rejected_reason = None
    else:
        agent.rules_rejected_digest = result.digest[:64]
        agent.rules_rejected_reason = result.reason[:MAX_REASON_CHARS] or "rejected"


def record_heartbeat(*, agent: Agent, digest: str | None) -> None:
    """A heartbeat says which set the agent runs ("" none yet), e.g. after its state was lost;
    a heartbeat without the field comes from an agent that takes no rule sets."""
    agent.rules_digest = digest[:64] if digest is not None else None
