"""Every SigmaHQ network and web rule compiles, or is listed with its unsupported feature.

``unsupported.txt`` may only shrink: a listed rule that now compiles fails the test (delete its
line), and so does a rule that fails without being listed (support it, or list it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from a2z.rules import RuleError, UnsupportedRuleError, compile_yaml

CORPUS = Path("/work/shared/corpus/sigma/rules")
ROOTS = (CORPUS / "network", CORPUS / "web")
UNSUPPORTED = Path(__file__).with_name("unsupported.txt")


def listed() -> dict[str, str]:
    """rule id -> feature, from unsupported.txt (``<id> <feature>``, # comments)."""
    out: dict[str, str] = {}
    for line in UNSUPPORTED.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            rule_id, feature = line.split(" ", 1)
            out[rule_id] = feature
    return out


def corpus_files() -> list[Path]:
    return sorted(p for root in ROOTS for p in root.rglob("*.yml"))


def outcomes() -> tuple[set[str], dict[str, str], list[RuleError]]:
    compiled: set[str] = set()
    unsupported: dict[str, str] = {}
    broken: list[RuleError] = []
    for path in corpus_files():
        try:
            compiled.add(compile_yaml(path.read_text(encoding="utf-8"), path=str(path)).rule_id)
        except UnsupportedRuleError as exc:
            unsupported[exc.rule_id or str(path)] = exc.feature
        except RuleError as exc:
            broken.append(exc)
    return compiled, unsupported, broken


def test_corpus_is_present() -> None:
    assert len(corpus_files()) >= 90


def test_every_corpus_rule_compiles_or_is_listed_with_its_feature() -> None:
    compiled, unsupported, broken = outcomes()
    expected = listed()
    assert [str(e) for e in broken] == []  # nothing in SigmaHQ is invalid Sigma to us
    now_supported = sorted(set(expected) & compiled)
    assert now_supported == [], f"now compile, delete from unsupported.txt: {now_supported}"
    assert unsupported == expected


@pytest.mark.parametrize("family", ["web/proxy_generic", "web/webserver_generic", "network/dns"])
def test_generic_http_and_dns_rules_all_compile(family: str) -> None:
    unsupported_ids = set(listed())
    for path in sorted((CORPUS / family).rglob("*.yml")):
        text = path.read_text(encoding="utf-8")
        if any(rule_id in text for rule_id in unsupported_ids):
            continue
        compile_yaml(text, path=str(path))
