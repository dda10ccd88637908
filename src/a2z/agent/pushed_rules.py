"""Rule sets the server pushes to the edge (ADR 13): checked whole, swapped in at once, kept.

A push carries the tenant's whole edge rule set. Every rule must compile on this agent and the
set must match its digest, or the push is rejected with the reason and the running set stays.
The applied set is written to the state directory, so a restarted agent runs it again before
it reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from a2z.agent.identity import write_private
from a2z.records import PushedRule, RulesPush, RulesResult
from a2z.records.control import MAX_REASON_CHARS
from a2z.rules.catalog import ruleset_digest, version_of
from a2z.rules.errors import RuleError

if TYPE_CHECKING:  # the stage and the engine load when detection runs (see _compile)
    from a2z.agent.detect import EdgeDetector
    from a2z.rules.engine import RuleSet

log = logging.getLogger(__name__)

RULES_FILE = "applied-rules.json"


class AppliedRules(msgspec.Struct, frozen=True):
    """What the state file holds: the pushed set running, as it was pushed."""

    version: int
    digest: str
    rules: list[PushedRule]


@dataclass
class PushedRules:
    """The agent's copy of its tenant's rule set, applied to the edge detector."""

    detector: EdgeDetector | None  # None: edge detection is off (--no-detect)
    state_dir: Path | None = None  # where the applied set is kept (None: nowhere)
    digest: str = ""  # the set running ("" none yet)
    version: int = 0
    count: int = 0  # rules in it
    on_applied: Callable[[str], None] | None = None  # told the new digest (for heartbeats)

    def resume(self) -> None:
        """Run the set kept from an earlier run, if any (one that no longer applies is logged)."""
        if self.state_dir is None:
            return
        path = self.state_dir / RULES_FILE
        try:
            kept = msgspec.json.decode(path.read_bytes(), type=AppliedRules)
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("ignoring the kept rule set %s: %s", path, exc)
            return
        push = RulesPush(version=kept.version, digest=kept.digest, rules=kept.rules)
        result = self.apply(push, persist=False)
        if not result.applied:
            log.warning("kept rule set %s no longer applies: %s", kept.digest[:12], result.reason)

    def apply(self, push: RulesPush, *, persist: bool = True) -> RulesResult:
        """Compile every rule of ``push`` and swap the set in; on any failure the old one stays."""
        if push.digest == self.digest:
            return self._result(push, applied=True)  # a re-push: nothing to do
        if self.detector is None:
            return self._result(push, reason="edge detection is off on this agent (--no-detect)")
        if ruleset_digest((r.id, r.yaml) for r in push.rules) != push.digest:
            return self._result(push, reason="the rules do not match the set's digest")
        if version_of(push.digest) != push.version:
            return self._result(push, reason="the set's version does not match its digest")
        try:
            ruleset = _compile(push.rules)
        except RuleError as exc:
            return self._result(push, reason=str(exc))
        self.detector.set_pushed_rules(ruleset if len(ruleset) else None)
        self.digest, self.version, self.count = push.digest, push.version, len(push.rules)
        if persist and self.state_dir is not None:
            kept = AppliedRules(push.version, push.digest, push.rules)
            write_private(self.state_dir / RULES_FILE, msgspec.json.encode(kept))
        if self.on_applied is not None:
            self.on_applied(push.digest)
        log.info("applied rule set %s (%d rules)", push.digest[:12], len(push.rules))
        return self._result(push, applied=True)

    def _result(self, push: RulesPush, *, applied: bool = False, reason: str = "") -> RulesResult:
        if not applied:
            log.warning("rejected rule set %s: %s", push.digest[:12], reason)
        return RulesResult(
            digest=push.digest,
            version=push.version,
            applied=applied,
            rules=len(push.rules),
            reason=reason[:MAX_REASON_CHARS],
        )


def _compile(rules: list[PushedRule]) -> RuleSet:
    # pySigma loads here, on the first push, not when the agent starts.
    from a2z.rules.compile import compile_yaml
    from a2z.rules.engine import RuleSet

    compiled = []
    for rule in rules:
        try:
            one = compile_yaml(rule.yaml)
        except RuleError as exc:
            message = f"does not compile on this agent: {exc.message}"
            raise RuleError(message, rule_id=rule.id) from exc
        if one.rule_id != rule.id:
            raise RuleError(f"its text carries the id {one.rule_id}", rule_id=rule.id)
        compiled.append(one)
    return RuleSet(compiled)
