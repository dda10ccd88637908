"""The agent's edge detection stage: records in, the same records plus alerts out.

Every record goes to the built-in detections that consume its type and to the optional Sigma
rule set; their alerts pass the suppression windows and follow the record that completed
them in the stream, so replay prints them and the shipper sends them like any record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from a2z.records import Alert, Record
from a2z.rules.detections import BuiltinSettings, Detection, builtin_detections
from a2z.rules.errors import RuleError
from a2z.rules.suppress import SuppressionSettings, SuppressionStats, Suppressor

if TYPE_CHECKING:  # the Sigma engine loads pySigma: only when rules are given (load_rules)
    from a2z.rules.engine import RuleSet
    from a2z.rules.fields import RuleRecord

log = logging.getLogger(__name__)


class DetectConfigError(Exception):
    """The detection stage cannot start: a rules path is missing or unreadable."""


@dataclass(slots=True)
class DetectStats:
    """Counters of the stage; the replay summary and the metrics read them."""

    records: int = 0  # records looked at
    raised: dict[str, int] = field(default_factory=dict)  # alerts by rule, before suppression
    emitted: dict[str, int] = field(default_factory=dict)  # alerts by rule, after suppression
    errors: dict[str, int] = field(default_factory=dict)  # failures by rule id ("sigma": rules)
    suppression: SuppressionStats = field(default_factory=SuppressionStats)

    def evictions(self, detections: Iterable[Detection]) -> int:
        """Keys the detections had to forget (state tables full)."""
        return sum(d.stats.evictions for d in detections)


def load_rules(paths: Sequence[Path]) -> tuple[RuleSet, list[RuleError]]:
    """Compile the Sigma rules in files and directories; bad rules come back as errors."""
    from a2z.rules.compile import compile_yaml
    from a2z.rules.engine import RuleSet, load_directory

    rules = []
    errors: list[RuleError] = []
    for path in paths:
        if path.is_dir():
            result = load_directory(path)
            rules.extend(result.rules)
            errors.extend(result.errors)
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DetectConfigError(f"cannot read rules from {path}: {exc}") from exc
        try:
            rules.append(compile_yaml(text, path=str(path)))
        except RuleError as exc:
            errors.append(exc)
    return RuleSet(rules), errors


class EdgeDetector:
    """Built-ins plus Sigma rules plus suppression, for one agent (one tenant)."""

    def __init__(
        self,
        *,
        builtins: BuiltinSettings | None = None,
        rules: RuleSet | None = None,
        suppression: SuppressionSettings | None = None,
        enable_builtins: bool = True,
        rule_paths: Sequence[Path] = (),
    ) -> None:
        self.detections: list[Detection] = builtin_detections(builtins) if enable_builtins else []
        self.rule_paths = tuple(rule_paths)  # where ``rules`` came from; reload_rules re-reads
        # Two sources of Sigma rules: the local ones (--rules) and the set the server pushed
        # (the tenant's rules, ADR 13). ``rules`` is both, rebuilt whenever either changes and
        # swapped in one assignment, so the stream never sees a half-changed set.
        self.local_rules = rules
        self.pushed_rules: RuleSet | None = None
        self.rules = rules
        self.suppressor = Suppressor(suppression)
        self.stats = DetectStats(suppression=self.suppressor.stats)
        # Dispatch by record type once, not per record.
        self._by_type: dict[type, list[Detection]] = {}
        for d in self.detections:
            for record_type in d.consumes:
                self._by_type.setdefault(record_type, []).append(d)

    def reload_rules(self) -> dict[str, Any]:
        """Re-read the Sigma rules from ``rule_paths`` (the ``reload-rules`` command).

        The new set replaces the old one in a single assignment, so the record stream never
        sees a half-loaded set; a path that cannot be read raises DetectConfigError and the old
        set keeps running. Rules that do not compile are skipped and reported.
        """
        if not self.rule_paths:
            raise DetectConfigError("this agent was started without --rules: nothing to reload")
        rules, errors = load_rules(self.rule_paths)
        self.local_rules = rules
        self._combine()
        return {
            "rules": len(rules),
            "pushed": len(self.pushed_rules) if self.pushed_rules is not None else 0,
            "paths": [str(p) for p in self.rule_paths],
            "errors": [str(e) for e in errors[:20]],
            "error_count": len(errors),
        }

    def set_pushed_rules(self, rules: RuleSet | None) -> None:
        """Run ``rules`` (compiled from a server push) beside the local ones, replacing the
        previously pushed set at once."""
        self.pushed_rules = rules
        self._combine()

    def _combine(self) -> None:
        from a2z.rules.engine import RuleSet

        local, pushed = self.local_rules, self.pushed_rules
        if local is None or pushed is None:
            self.rules = local if pushed is None else pushed
            return
        # A local rule with a pushed rule's id wins: the operator put it on this host on purpose.
        ids = {rule.rule_id for rule in local.rules}
        self.rules = RuleSet(
            [*local.rules, *(rule for rule in pushed.rules if rule.rule_id not in ids)]
        )

    def process(self, record: Record) -> list[Alert]:
        """The alerts (after suppression) that ``record`` completes."""
        self.stats.records += 1
        if isinstance(record, Alert):
            return []  # our own output is never evidence
        raised: list[Alert] = []
        for detection in self._by_type.get(type(record), ()):
            try:
                raised.extend(detection.observe(record))
            except Exception:  # one broken detection must not stop the stream or the others
                self._failed(detection.info.rule_id, record)
        if self.rules is not None:
            rule_record: RuleRecord = record
            try:
                raised.extend(self.rules.match(rule_record))
            except Exception:  # a rule's predicate should not raise; if one does, go on
                self._failed("sigma", record)
        if not raised:
            return []
        return self._admit(raised)

    def tick(self, now: float) -> list[Alert]:
        """Time passed (live capture): summaries of the suppression windows that closed."""
        return self._count(self.suppressor.expire(now))

    def flush(self) -> list[Alert]:
        """End of the stream: summaries of every window still open."""
        return self._count(self.suppressor.flush())

    def records(self, source: Iterable[Record]) -> Iterator[Record]:
        """``source`` with the alerts inserted after the records that completed them."""
        process = self.process
        for record in source:
            yield record
            yield from process(record)
        yield from self.flush()

    def live(self, source: Iterable[Record | None]) -> Iterator[Record | None]:
        """As :meth:`records` for a live source whose ``None`` ticks mark time passing."""
        process = self.process
        for record in source:
            if record is None:
                yield from self.tick(time.time())
                yield None
                continue
            yield record
            yield from process(record)
        yield from self.flush()

    def _failed(self, rule_id: str, record: Record) -> None:
        """Count a detection's failure; log the first of each (with its traceback)."""
        first = rule_id not in self.stats.errors
        self.stats.errors[rule_id] = self.stats.errors.get(rule_id, 0) + 1
        if first:
            log.exception("detection %s failed on a %s record", rule_id, type(record).__name__)

    def _admit(self, raised: list[Alert]) -> list[Alert]:
        stats = self.stats
        out: list[Alert] = []
        for alert in raised:
            stats.raised[alert.rule_id] = stats.raised.get(alert.rule_id, 0) + 1
            out.extend(self.suppressor.admit(alert))
        return self._count(out)

    def _count(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.stats.emitted[alert.rule_id] = self.stats.emitted.get(alert.rule_id, 0) + 1
        return alerts
