"""Which rule set an agent is due (ADR 13): the tenant's edge set, followed, pinned or off."""

from __future__ import annotations

import pytest

from a2z.records import AgentSettings
from a2z.rules.catalog import digest_of, ruleset_digest
from a2z.server.agents.edge_rules import edge_set, pinned, wanted
from a2z.server.rules.service import EffectiveRule, EffectiveRuleSet

DETECTION = "title: D\nid: 11111111-1111-4111-8111-111111111111\nlogsource:\n  category: dns\n"
CORRELATION = (
    "title: C\nid: 22222222-2222-4222-8222-222222222222\ncorrelation:\n  type: event_count\n"
)


def effective(*texts: str) -> EffectiveRuleSet:
    rules = tuple(
        EffectiveRule(f"0000000{i}-0000-4000-8000-000000000000", "custom", 1, "t", t, digest_of(t))
        for i, t in enumerate(texts)
    )
    return EffectiveRuleSet(rules, digest_of("".join(texts)), 1)


def test_the_edge_set_leaves_correlation_rules_to_the_backend() -> None:
    push = edge_set(effective(DETECTION, CORRELATION))
    assert [r.yaml for r in push.rules] == [DETECTION]
    assert push.digest == ruleset_digest([(push.rules[0].id, DETECTION)])
    assert push.version == int(push.digest[:15], 16)


@pytest.mark.parametrize("choice", ["", "latest"])
def test_latest_follows_the_tenants_rules(choice: str) -> None:
    current = effective(DETECTION)
    assert wanted(AgentSettings(ruleset_version=choice), current) == edge_set(current)


def test_off_sends_an_empty_set() -> None:
    push = wanted(AgentSettings(ruleset_version="off"), effective(DETECTION))
    assert push is not None and push.rules == [] and push.digest == ruleset_digest([])


def test_a_pin_sends_its_set_only_while_it_is_the_tenants_current_one() -> None:
    current = edge_set(effective(DETECTION))
    for pin in (str(current.version), current.digest[:12], current.digest.upper()):
        assert pinned(pin, current)
        assert wanted(AgentSettings(ruleset_version=pin), effective(DETECTION)) == current
    assert not pinned(current.digest[:11], current)  # too short to name a set
    moved_on = effective(DETECTION, DETECTION.replace("title: D", "title: E"))
    assert wanted(AgentSettings(ruleset_version=str(current.version)), moved_on) is None
