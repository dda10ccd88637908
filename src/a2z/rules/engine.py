"""RuleSet: runs compiled Sigma rules on records and turns matches into alerts.

Rules are indexed by record type, and a rule with required literals only runs when an
Aho-Corasick automaton finds one of them in the record's text, so the cost per record follows
the rules that could match rather than the number of rules loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import ahocorasick  # type: ignore[import-not-found]  # pyahocorasick ships no type stubs

from a2z.records import Alert
from a2z.rules.compile import CompiledRule, compile_yaml
from a2z.rules.errors import RuleError
from a2z.rules.fields import RuleRecord, field_names
from a2z.rules.fields import text as field_text


class _Automaton(Protocol):
    """The part of pyahocorasick's Automaton we use, typed."""

    def iter(self, haystack: str) -> Iterator[tuple[int, tuple[int, ...]]]: ...


def _build_automaton(table: Mapping[str, list[int]]) -> _Automaton:
    """A multi-pattern matcher (C, Aho-Corasick) from literal to the rules that need it."""
    automaton = ahocorasick.Automaton()
    for literal, ids in table.items():
        automaton.add_word(literal, tuple(ids))
    automaton.make_automaton()
    matcher: _Automaton = automaton
    return matcher


@dataclass(slots=True)
class _TypeIndex:
    """The rules for one record type: those that always run and the literal prefilter."""

    fields: tuple[str, ...]
    always: list[int] = field(default_factory=list)  # rules without a literal requirement
    automaton: _Automaton | None = None  # literal -> indices of rules needing it


class RuleSet:
    """An immutable set of compiled rules; ``match`` is safe to call from many threads."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        self._index: dict[type[RuleRecord], _TypeIndex] = {}
        by_literal: dict[type[RuleRecord], dict[str, list[int]]] = {}
        for i, rule in enumerate(self.rules):
            index = self._index.get(rule.record_type)
            if index is None:
                index = self._index[rule.record_type] = _TypeIndex(field_names(rule.record_type))
            if rule.literals is None:
                index.always.append(i)
            else:
                table = by_literal.setdefault(rule.record_type, {})
                for literal in rule.literals:
                    table.setdefault(literal, []).append(i)
        for record_type, table in by_literal.items():
            self._index[record_type].automaton = _build_automaton(table)

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, record: RuleRecord) -> list[CompiledRule]:
        """The rules worth running on ``record``, in load order (the prefilter's output)."""
        index = self._index.get(type(record))
        if index is None:
            return []
        ids = set(index.always)
        if index.automaton is not None:
            haystack = "\n".join(
                field_text(v).lower()
                for v in (getattr(record, n) for n in index.fields)
                if v is not None
            )
            for _end, hits in index.automaton.iter(haystack):
                ids.update(hits)
        return [self.rules[i] for i in sorted(ids)]

    def matching(self, record: RuleRecord) -> Iterator[CompiledRule]:
        """The rules whose detection matches ``record``."""
        for rule in self.candidates(record):
            if rule.predicate(record):
                yield rule

    def match(self, record: RuleRecord) -> list[Alert]:
        """One alert per matching rule, with the record as evidence."""
        return [alert_for(rule, record) for rule in self.matching(record)]


def alert_for(rule: CompiledRule, record: RuleRecord) -> Alert:
    """The alert a rule raises on a record; repeats share a dedup key (rule + both ends)."""
    return Alert(
        ts=record.ts,
        uid=record.uid,
        orig_h=record.orig_h,
        orig_p=record.orig_p,
        resp_h=record.resp_h,
        resp_p=record.resp_p,
        rule_id=rule.rule_id,
        title=rule.title,
        severity=rule.severity,
        attack=list(rule.attack),
        uids=[record.uid],
        dedup_key=f"{rule.rule_id}|{record.orig_h}|{record.resp_h}",
    )


def match_naive(rules: Iterable[CompiledRule], record: RuleRecord) -> list[Alert]:
    """Every rule on the record, no index or prefilter: the reference for tests and bench."""
    return [
        alert_for(rule, record)
        for rule in rules
        if rule.record_type is type(record) and rule.predicate(record)
    ]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What loading a directory gave: the rules that compiled and the errors of the rest."""

    rules: list[CompiledRule]
    errors: list[RuleError]


def load_directory(*roots: Path) -> LoadResult:
    """Compile every ``*.yml`` under the roots; a bad rule is reported, never fatal."""
    rules: list[CompiledRule] = []
    errors: list[RuleError] = []
    for root in roots:
        for path in sorted(root.rglob("*.yml")):
            try:
                rules.append(compile_yaml(path.read_text(encoding="utf-8"), path=str(path)))
            except RuleError as exc:
                errors.append(exc)
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(RuleError(f"unreadable: {exc}", path=str(path)))
    return LoadResult(rules, errors)
