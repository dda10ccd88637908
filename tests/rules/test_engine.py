"""RuleSet: record-type routing, the literal prefilter, and the alerts it produces."""

from __future__ import annotations

import pytest

from a2z.records import Severity
from a2z.rules import RuleError, RuleSet, UnsupportedRuleError, compile_yaml, match_naive
from tests.rules.builders import conn, dns, http, rule, rule_yaml

RULE_ID = "5e6f7a8b-0000-4000-8000-000000000001"


def test_alert_carries_rule_metadata_and_evidence() -> None:
    compiled = rule(
        {"selection": {"user_agent|contains": "sqlmap"}, "condition": "selection"},
        id=RULE_ID,
        title="SQLMap user agent",
        level="critical",
        tags=["attack.initial-access", "attack.t1190", "attack.t1071.001", "cve.2021-1234"],
    )
    record = http(user_agent="sqlmap/1.7.2#stable (https://sqlmap.org)")
    [alert] = RuleSet([compiled]).match(record)
    assert alert.rule_id == RULE_ID
    assert alert.title == "SQLMap user agent"
    assert alert.severity is Severity.CRITICAL
    assert alert.attack == ["T1190", "T1071.001"]
    assert alert.uids == [record.uid]
    assert alert.uid == record.uid
    assert (alert.orig_h, alert.resp_h, alert.resp_p) == ("10.66.0.10", "10.66.0.20", 80)
    assert alert.dedup_key == f"{RULE_ID}|10.66.0.10|10.66.0.20"


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        ("informational", Severity.LOW),
        ("low", Severity.LOW),
        ("medium", Severity.MEDIUM),
        ("high", Severity.HIGH),
    ],
)
def test_sigma_level_maps_to_severity(level: str, severity: Severity) -> None:
    assert (
        rule({"selection": {"method": "GET"}, "condition": "selection"}, level=level).severity
        is severity
    )


def test_rules_only_see_their_record_type() -> None:
    http_rule = rule({"selection": {"id.resp_p": 80}, "condition": "selection"})
    dns_rule = rule(
        {"selection": {"query|endswith": ".test"}, "condition": "selection"}, {"category": "dns"}
    )
    ruleset = RuleSet([http_rule, dns_rule])
    assert [a.rule_id for a in ruleset.match(http())] == [http_rule.rule_id]
    assert [a.rule_id for a in ruleset.match(dns())] == [dns_rule.rule_id]
    assert ruleset.match(conn()) == []


def test_prefilter_skips_rules_whose_literals_are_absent() -> None:
    literal_rule = rule({"selection": {"uri|contains": "/etc/passwd"}, "condition": "selection"})
    numeric_rule = rule({"selection": {"status_code|gte": 500}, "condition": "selection"})
    assert literal_rule.literals == frozenset({"/etc/passwd"})
    assert numeric_rule.literals is None
    ruleset = RuleSet([literal_rule, numeric_rule])
    assert ruleset.candidates(http()) == [numeric_rule]
    assert ruleset.candidates(http(uri="/../../ETC/PASSWD")) == [literal_rule, numeric_rule]


def test_literals_of_and_take_one_branch_and_or_needs_all() -> None:
    both = rule({"a": {"uri|contains": "union"}, "b": {"method": "GET"}, "condition": "a and b"})
    assert both.literals == frozenset({"union"})
    either = rule({"a": {"uri|contains": "union"}, "b": {"method": "PUT"}, "condition": "a or b"})
    assert either.literals == frozenset({"union", "put"})
    negated = rule({"a": {"uri|contains": "union"}, "condition": "not a"})
    assert negated.literals is None
    short = rule({"a": {"uri|contains": "/x"}, "condition": "a"})
    assert short.literals is None


def test_prefilter_agrees_with_naive_matching() -> None:
    rules = [
        rule({"s": {"uri|contains": word}, "condition": "s"})
        for word in ("passwd", "union", "select", "<script", "../")
    ] + [
        rule(
            {
                "s": {"user_agent|startswith": "sqlmap"},
                "f": {"status_code": 404},
                "condition": "s and not f",
            }
        ),
        rule({"s": {"uri|re": "[0-9]{3}"}, "condition": "s"}),
        rule({"k": ["nikto"], "condition": "k"}, {"category": "webserver"}),
    ]
    ruleset = RuleSet(rules)
    records = [
        http(),
        http(uri="/?id=1 UNION SELECT 1,2"),
        http(uri="/../../etc/passwd", status_code=404),
        http(user_agent="sqlmap/1.7", uri="/p?id=123"),
        http(user_agent="Mozilla/5.00 (Nikto/2.5.0)", uri="/<script>alert(1)</script>"),
    ]
    for record in records:
        assert ruleset.match(record) == match_naive(rules, record)


def test_rule_error_names_file_and_rule() -> None:
    text = rule_yaml(
        {"s": {"action": "blocked"}, "condition": "s"}, {"category": "firewall"}, id=RULE_ID
    )
    with pytest.raises(UnsupportedRuleError) as info:
        compile_yaml(text, path="rules/fw.yml")
    err = info.value
    assert (err.path, err.rule_id) == ("rules/fw.yml", RULE_ID)
    assert err.feature == "field 'action' has no equivalent in conn records"
    assert str(err) == f"rules/fw.yml: rule {RULE_ID}: unsupported: {err.feature}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "title: [",
        "title: x\n",
        "- a\n- b\n",
        "title: t\nlogsource: {category: proxy}\ndetection: {}\n",
    ],
)
def test_malformed_documents_raise_rule_error(text: str) -> None:
    with pytest.raises(RuleError):
        compile_yaml(text, path="bad.yml")
