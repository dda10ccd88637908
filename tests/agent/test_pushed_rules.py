"""Rule sets pushed by the server, on the agent alone: checked whole, swapped in beside the
local rules, the old set kept on any failure, and the applied set resumed after a restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import msgspec
import pytest

from a2z.agent.control import AgentRuntime
from a2z.agent.detect import EdgeDetector, load_rules
from a2z.agent.pushed_rules import RULES_FILE, PushedRules
from a2z.records import Http, PushedRule, RulesPush, RulesResult
from a2z.rules.catalog import ruleset_digest, version_of

PROBE = Http(
    ts=1.0, uid="Cprobe", orig_h="10.0.0.1", orig_p=40000, resp_h="10.0.0.2", resp_p=80,
    method="GET", host="h", uri="/pushed?x=1", status_code=200,
)  # fmt: skip


def rule(title: str, uri: str, rule_id: str | None = None) -> PushedRule:
    rid = rule_id or str(uuid.uuid4())
    text = (
        f"title: {title}\nid: {rid}\nlogsource:\n  category: webserver\n"
        f"detection:\n  selection:\n    cs-uri-query|contains: '{uri}'\n"
        "  condition: selection\nlevel: high\n"
    )
    return PushedRule(id=rid, yaml=text)


def push(*rules: PushedRule) -> RulesPush:
    digest = ruleset_digest((r.id, r.yaml) for r in rules)
    return RulesPush(version=version_of(digest), digest=digest, rules=list(rules))


def titles(detector: EdgeDetector) -> list[str]:
    """The rules the detector runs that match the probe (before suppression)."""
    return [a.title for a in detector.rules.match(PROBE)] if detector.rules is not None else []


def test_a_pushed_set_runs_beside_the_local_rules_and_replaces_the_previous_one(
    tmp_path: Path,
) -> None:
    local_dir = tmp_path / "rules"
    local_dir.mkdir()
    (local_dir / "local.yml").write_text(rule("Local", "/pushed").yaml)
    detector = EdgeDetector(
        rules=load_rules([local_dir])[0], rule_paths=[local_dir], enable_builtins=False
    )
    seen: list[str] = []
    keeper = PushedRules(detector, state_dir=tmp_path, on_applied=seen.append)
    first = push(rule("Pushed one", "/pushed"))
    assert keeper.apply(first) == RulesResult(
        digest=first.digest, version=first.version, applied=True, rules=1
    )
    assert sorted(titles(detector)) == ["Local", "Pushed one"]
    second = push(rule("Pushed two", "/pushed"))
    assert keeper.apply(second).applied
    assert sorted(titles(detector)) == ["Local", "Pushed two"]
    assert seen == [first.digest, second.digest]
    # reload-rules re-reads the local files and keeps the pushed set.
    assert detector.reload_rules()["pushed"] == 1
    assert sorted(titles(detector)) == ["Local", "Pushed two"]
    # An empty set (ruleset_version "off") leaves only the local rules.
    assert keeper.apply(push()).applied
    assert titles(detector) == ["Local"]


def test_a_local_rule_wins_over_a_pushed_rule_with_its_id(tmp_path: Path) -> None:
    shared = str(uuid.uuid4())
    (tmp_path / "local.yml").write_text(rule("Local copy", "/pushed", shared).yaml)
    detector = EdgeDetector(rules=load_rules([tmp_path / "local.yml"])[0], enable_builtins=False)
    assert PushedRules(detector).apply(push(rule("Pushed copy", "/pushed", shared))).applied
    assert titles(detector) == ["Local copy"]


def test_a_set_with_a_rule_that_does_not_compile_is_rejected_and_the_old_one_runs(
    tmp_path: Path,
) -> None:
    detector = EdgeDetector(enable_builtins=False)
    keeper = PushedRules(detector, state_dir=tmp_path)
    good = push(rule("Good", "/pushed"))
    assert keeper.apply(good).applied
    running = detector.rules
    bad_id = str(uuid.uuid4())
    unsupported = PushedRule(
        id=bad_id,
        yaml=f"title: Cisco\nid: {bad_id}\nlogsource:\n  product: cisco\n  service: aaa\n"
        "detection:\n  k:\n    - clear logging\n  condition: k\n",
    )
    bad = push(rule("Fine", "/x"), unsupported)
    result = keeper.apply(bad)
    assert not result.applied and result.digest == bad.digest and result.rules == 2
    assert bad_id in result.reason and "logsource product=cisco" in result.reason
    assert detector.rules is running and keeper.digest == good.digest
    assert titles(detector) == ["Good"]
    kept = msgspec.json.decode((tmp_path / RULES_FILE).read_bytes())
    assert kept["digest"] == good.digest  # the state file still holds the running set


@pytest.mark.parametrize("tamper", ["digest", "version", "id"])
def test_a_set_that_does_not_match_its_digest_or_ids_is_rejected(tamper: str) -> None:
    detector = EdgeDetector(enable_builtins=False)
    one = rule("One", "/pushed")
    good = push(one)
    if tamper == "digest":
        sent = msgspec.structs.replace(good, rules=[rule("Other", "/pushed")])
    elif tamper == "version":
        sent = msgspec.structs.replace(good, version=good.version + 1)
    else:  # the text carries another id than the one it is pushed under
        sent = push(PushedRule(id=str(uuid.uuid4()), yaml=one.yaml))
    result = PushedRules(detector).apply(sent)
    assert not result.applied and result.reason
    assert detector.rules is None


def test_the_applied_set_survives_a_restart(tmp_path: Path) -> None:
    applied = push(rule("Kept", "/pushed"))
    assert PushedRules(EdgeDetector(enable_builtins=False), state_dir=tmp_path).apply(applied)
    restarted = EdgeDetector(enable_builtins=False)
    keeper = PushedRules(restarted, state_dir=tmp_path)
    keeper.resume()
    assert keeper.digest == applied.digest and titles(restarted) == ["Kept"]
    (tmp_path / RULES_FILE).write_bytes(b"{not json")
    broken = PushedRules(EdgeDetector(enable_builtins=False), state_dir=tmp_path)
    broken.resume()  # a damaged state file is ignored, not fatal
    assert broken.digest == ""


def test_the_control_handler_answers_rule_pushes(tmp_path: Path) -> None:
    detector = EdgeDetector(enable_builtins=False)
    runtime = AgentRuntime(state_dir=tmp_path)
    runtime.apply_rules = PushedRules(detector).apply
    sent = push(rule("Via the channel", "/pushed"))
    answer = asyncio.run(runtime.handle(msgspec.json.encode(sent).decode()))
    assert answer is not None
    assert msgspec.json.decode(answer)["type"] == "rules_result"
    assert msgspec.json.decode(answer)["applied"] is True
    assert titles(detector) == ["Via the channel"]
    # A malformed push (a rule without text) is refused by schema, with its digest.
    broken = msgspec.json.decode(msgspec.json.encode(sent))
    del broken["rules"][0]["yaml"]
    refused = asyncio.run(runtime.handle(msgspec.json.encode(broken).decode()))
    assert refused is not None
    decoded = msgspec.json.decode(refused)
    assert (decoded["applied"], decoded["digest"]) == (False, sent.digest)
    assert "invalid rule set" in decoded["reason"]


def test_an_agent_without_edge_detection_rejects_sets_with_the_reason() -> None:
    result = PushedRules(None).apply(push(rule("Any", "/pushed")))
    assert not result.applied and "--no-detect" in result.reason
