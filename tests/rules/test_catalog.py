"""The shipped rule catalog: what the product ships, unmodified from SigmaHQ, and all runnable."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2z.rules import RuleError, RuleSyntaxError, compile_yaml
from a2z.rules.catalog import catalog_of, digest_of, is_correlation, shipped_catalog
from a2z.rules.correlation import compile_correlations

CORPUS = Path("/work/shared/corpus/sigma/rules")
RULE = "title: T\nid: {id}\nlogsource:\n  category: dns\ndetection:\n  s:\n    query: x\n  condition: s\n"
ID_1 = "0b1c9a3e-59d6-4b0c-9d0b-4f1f2a0c0001"
ID_2 = "0b1c9a3e-59d6-4b0c-9d0b-4f1f2a0c0002"


OURS = "correlation/"  # our correlation rules: not SigmaHQ's, and not single-document


def test_every_shipped_rule_compiles_under_its_sigma_id() -> None:
    catalog = shipped_catalog()
    assert len(catalog) >= 15
    for rule in catalog:
        if rule.source.startswith(OURS):
            continue
        compiled = compile_yaml(rule.yaml, path=rule.source)
        assert compiled.rule_id == rule.rule_id
        assert compiled.title == rule.title


def test_every_shipped_correlation_compiles_with_its_own_base_rules() -> None:
    ours = [rule for rule in shipped_catalog() if rule.source.startswith(OURS)]
    assert len(ours) >= 2
    for rule in ours:
        assert is_correlation(rule.yaml)
        load = compile_correlations([(rule.source, rule.yaml)])  # nothing else: self-contained
        assert load.errors == []
        top = [c for c in load.rules.correlations if c.rule_id == rule.rule_id]
        assert [c.title for c in top] == [rule.title]
        assert top[0].emits and top[0].attack, rule.source  # raises, with ATT&CK ids
        # Everything else in the text only feeds it: no alerts of their own.
        assert all(not c.emits for c in load.rules.correlations if c is not top[0])
        assert load.rules.silent_rule_ids == {r.rule_id for r in load.rules.base_rules.values()}


def test_shipped_rules_are_unmodified_sigmahq_copies() -> None:
    by_name = {p.name: p for p in CORPUS.rglob("*.yml")}
    for rule in shipped_catalog():
        if rule.source.startswith(OURS):
            continue
        assert by_name[rule.source].read_text(encoding="utf-8") == rule.yaml, rule.source


def test_only_a_top_level_correlation_key_makes_a_correlation_text() -> None:
    assert is_correlation("title: x\ncorrelation:\n  type: temporal\n")
    assert not is_correlation(RULE.format(id=ID_1))
    assert not is_correlation("title: x\ndescription: |\n  correlation: in a text block\n")


def test_catalog_is_ordered_by_id_and_its_digest_follows_every_text() -> None:
    one = catalog_of([("b.yml", RULE.format(id=ID_2)), ("a.yml", RULE.format(id=ID_1))])
    assert list(one.rules) == [ID_1, ID_2]
    same = catalog_of([("a.yml", RULE.format(id=ID_1)), ("b.yml", RULE.format(id=ID_2))])
    assert same.digest == one.digest
    changed = catalog_of(
        [("a.yml", RULE.format(id=ID_1) + "level: high\n"), ("b.yml", RULE.format(id=ID_2))]
    )
    assert changed.digest != one.digest
    assert changed.rules[ID_1].digest == digest_of(RULE.format(id=ID_1) + "level: high\n")
    assert changed.rules[ID_2] == one.rules[ID_2]


def test_catalog_refuses_a_repeated_id() -> None:
    with pytest.raises(RuleError, match=r"b\.yml.*id also used by a\.yml"):
        catalog_of([("a.yml", RULE.format(id=ID_1)), ("b.yml", RULE.format(id=ID_1))])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (RULE.format(id="not-a-uuid"), "is not a UUID"),
        (RULE.replace("title: T\n", "").format(id=ID_1), "needs a title"),
        ("- just\n- a list\n", "a YAML mapping"),
        ("title: [unclosed\n", "invalid YAML"),
    ],
)
def test_catalog_refuses_a_rule_without_a_usable_header(text: str, reason: str) -> None:
    with pytest.raises(RuleSyntaxError, match=reason) as caught:
        catalog_of([("bad.yml", text)])
    assert caught.value.path == "bad.yml"
