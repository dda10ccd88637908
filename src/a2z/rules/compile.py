"""Sigma rule -> Python predicate over one record type, plus the literals the prefilter needs.

pySigma parses the YAML, applies value modifiers and resolves the condition into a tree whose
leaves are (field, value) pairs; we turn each leaf into a small closure and combine them.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.modifiers import SigmaWideModifier, modifier_mapping
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SigmaType,
    SpecialChars,
)

from a2z.records import Severity
from a2z.rules.errors import RuleError, RuleSyntaxError, UnsupportedRuleError
from a2z.rules.fields import Getter, RuleRecord, accessor, build_pipeline, keyword_accessor, route
from a2z.rules.fields import text as field_text

Predicate = Callable[[RuleRecord], bool]
Literals = frozenset[str] | None
"""Lower-cased strings of which at least one occurs in any matching record; None: no such set."""

MIN_LITERAL = 3  # shorter literals would make the prefilter pass nearly every record

_SEVERITY = {
    "informational": Severity.LOW,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
    "critical": Severity.CRITICAL,
}
_ATTACK_TECHNIQUE = re.compile(r"t\d{4}(?:\.\d{3})?", re.IGNORECASE)
_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}
_COMPARE: dict[CompareOperators, Callable[[Any, Any], bool]] = {
    CompareOperators.LT: operator.lt,
    CompareOperators.LTE: operator.le,
    CompareOperators.GT: operator.gt,
    CompareOperators.GTE: operator.ge,
    CompareOperators.NEQ: operator.ne,
}


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One Sigma rule ready to run: its predicate, routing and alert metadata."""

    rule_id: str  # the Sigma id (or the title when a rule has none)
    title: str  # the Sigma title, used as the alert title
    severity: Severity  # from the Sigma level (informational counts as low)
    attack: tuple[str, ...]  # ATT&CK technique ids from attack.tNNNN tags, e.g. T1190
    record_type: type[RuleRecord]  # the only record type the rule can match
    predicate: Predicate  # True when the record matches the detection
    literals: Literals  # prefilter: one of these occurs in every matching record's text
    path: str | None = None  # the file the rule came from


_PIPELINE: ProcessingPipeline | None = None


def _pipeline() -> ProcessingPipeline:
    global _PIPELINE  # built once on first use: no import-time work
    if _PIPELINE is None:
        # The Sigma spec names utf16le as an alias of wide; pySigma 2.0 does not know it yet.
        modifier_mapping.setdefault("utf16le", SigmaWideModifier)
        _PIPELINE = build_pipeline()
    return _PIPELINE


def parse_rule(source: str, *, path: str | None = None) -> SigmaRule:
    """Parse Sigma YAML into a pySigma rule with our field mapping applied."""
    pipeline = _pipeline()
    try:
        rule = SigmaRule.from_yaml(source, collect_errors=False)
        pipeline.apply(rule)
    except (SigmaError, yaml.YAMLError) as exc:
        raise RuleSyntaxError(str(exc), path=path) from exc
    except (ValueError, TypeError, AttributeError, KeyError, re.error) as exc:
        # pySigma lets some malformed shapes escape as builtin errors; the boundary maps them.
        raise RuleSyntaxError(f"malformed rule: {exc!r}", path=path) from exc
    return rule


def compile_yaml(source: str, *, path: str | None = None) -> CompiledRule:
    """Parse and compile one Sigma rule document."""
    return compile_rule(parse_rule(source, path=path), path=path)


def compile_rule(rule: SigmaRule, *, path: str | None = None) -> CompiledRule:
    """Compile a parsed (and field-mapped) Sigma rule; raise RuleError if we cannot run it."""
    rule_id = str(rule.id) if rule.id else rule.title
    try:
        record_type = route(rule.logsource)
        if len(rule.detection.parsed_condition) != 1:
            raise UnsupportedRuleError("more than one condition")
        tree = rule.detection.parsed_condition[0].parsed
        builder = _Builder(record_type)
        predicate, literals = builder.node(tree)
    except RuleError as exc:
        raise exc.located(path=path, rule_id=rule_id) from None
    except SigmaError as exc:
        raise RuleSyntaxError(str(exc), path=path, rule_id=rule_id) from exc
    except (ValueError, TypeError, AttributeError, KeyError, re.error, RecursionError) as exc:
        raise RuleSyntaxError(f"malformed rule: {exc!r}", path=path, rule_id=rule_id) from exc
    level = rule.level.name.lower() if rule.level else "medium"
    attack = tuple(
        tag.name.upper()
        for tag in rule.tags
        if tag.namespace == "attack" and _ATTACK_TECHNIQUE.fullmatch(tag.name)
    )
    return CompiledRule(
        rule_id=rule_id,
        title=rule.title,
        severity=_SEVERITY.get(level, Severity.MEDIUM),
        attack=attack,
        record_type=record_type,
        predicate=predicate,
        literals=literals,
        path=path,
    )


class _Builder:
    """Walks pySigma's condition tree for one record type."""

    def __init__(self, record_type: type[RuleRecord]) -> None:
        self.record_type = record_type

    def node(self, item: object) -> tuple[Predicate, Literals]:
        if isinstance(item, ConditionAND | ConditionOR | ConditionNOT):
            parts = [self.node(arg) for arg in item.args]
            if isinstance(item, ConditionNOT):
                return _not(parts[0][0]), None
            preds = [p for p, _ in parts]
            if isinstance(item, ConditionAND):
                return _all(preds), _and_literals(lit for _, lit in parts)
            return _any(preds), _or_literals(lit for _, lit in parts)
        if isinstance(item, ConditionFieldEqualsValueExpression):
            return self.leaf(accessor(self.record_type, item.field), item.value)
        if isinstance(item, ConditionValueExpression):
            return self.leaf(keyword_accessor(self.record_type), item.value, keyword=True)
        if isinstance(item, ConditionItem):
            raise RuleSyntaxError(f"unresolved condition item {type(item).__name__}")
        raise RuleSyntaxError(f"empty or unknown condition element {item!r}")

    def leaf(
        self, get: Getter, value: SigmaType, *, keyword: bool = False
    ) -> tuple[Predicate, Literals]:
        if isinstance(value, SigmaExpansion):
            parts = [self.leaf(get, v, keyword=keyword) for v in value.values]
            return _any([p for p, _ in parts]), _or_literals(lit for _, lit in parts)
        if isinstance(value, SigmaString):
            if keyword:  # a keyword is a search term: it matches anywhere in the line
                value = _unanchored(value)
            test, literal = _string_test(value, cased=isinstance(value, SigmaCasedString))
            return _each(get, test), literal
        if isinstance(value, SigmaFieldReference):
            return _fieldref(get, accessor(self.record_type, value.field), value), None
        if isinstance(value, SigmaNull):
            return _null(get), None
        if isinstance(value, SigmaExists):
            return _exists(get, bool(value.exists)), None
        return _each(get, _value_test(value)), None


def _string_test(value: SigmaString, *, cased: bool) -> tuple[Callable[[object], bool], Literals]:
    """A test for one text value against a Sigma string with * and ? wildcards."""
    parts = list(value.s)
    if any(isinstance(p, Placeholder) for p in parts):
        names = ", ".join(p.name for p in parts if isinstance(p, Placeholder))
        raise UnsupportedRuleError(f"expand placeholder %{names}% (no placeholder values)")
    plain = [p for p in parts if isinstance(p, str)]
    longest = max(plain, key=len, default="")
    literal: Literals = frozenset({longest.lower()}) if len(longest) >= MIN_LITERAL else None
    norm: Callable[[str], str] = _identity if cased else str.lower
    multi = SpecialChars.WILDCARD_MULTI
    shape = [
        "*" if p is multi else "?" if p is SpecialChars.WILDCARD_SINGLE else "s" for p in parts
    ]
    needle = norm("".join(plain))
    check: Callable[[str], bool]
    if shape in ([], ["s"]):
        check = needle.__eq__
    elif shape == ["*", "s", "*"]:
        check = _contains(needle)
    elif shape == ["s", "*"]:
        check = _startswith(needle)
    elif shape == ["*", "s"]:
        check = _endswith(needle)
    elif shape == ["*"]:
        check = _anything
    else:
        pattern = "".join(
            ".*" if p is multi else "." if p is SpecialChars.WILDCARD_SINGLE else re.escape(str(p))
            for p in parts
        )
        rx = re.compile(pattern, re.DOTALL | (0 if cased else re.IGNORECASE))
        check = _fullmatch(rx)
        norm = _identity  # the regex carries the case flag
    final_norm = norm

    def test(v: object) -> bool:
        return v is not None and check(final_norm(field_text(v)))

    return test, literal


def _unanchored(value: SigmaString) -> SigmaString:
    """The value with * on both ends (kept case-sensitive if it was)."""
    multi = SpecialChars.WILDCARD_MULTI
    out = value
    if not out.startswith(multi):
        out = multi + out
    if not out.endswith(multi):
        out = out + multi
    if isinstance(value, SigmaCasedString):
        return SigmaCasedString.from_sigma_string(out)
    return out


def _identity(s: str) -> str:
    return s


def _anything(s: str) -> bool:
    return True


def _contains(needle: str) -> Callable[[str], bool]:
    return lambda s: needle in s


def _startswith(needle: str) -> Callable[[str], bool]:
    return lambda s: s.startswith(needle)


def _endswith(needle: str) -> Callable[[str], bool]:
    return lambda s: s.endswith(needle)


def _fullmatch(rx: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda s: rx.fullmatch(s) is not None


def _number(v: object) -> float | None:
    """A field value as a number for numeric comparison; None if it is not one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return v
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _value_test(value: SigmaType) -> Callable[[object], bool]:
    """A test for one field value against a non-string Sigma value."""
    if isinstance(value, SigmaBool):
        want = bool(value.boolean)
        return lambda v: v is want or (isinstance(v, str) and v.lower() == str(want).lower())
    if isinstance(value, SigmaTimestampPart):
        raise UnsupportedRuleError(f"timestamp part modifier ({value.timestamp_part.name.lower()})")
    if isinstance(value, SigmaNumber):
        n = value.number
        return lambda v: _number(v) == n
    if isinstance(value, SigmaCompareExpression):
        op, limit = _COMPARE[value.op], value.number.number

        def compare(v: object) -> bool:
            x = _number(v)
            return x is not None and op(x, limit)

        return compare
    if isinstance(value, SigmaRegularExpression):
        flags = 0
        for flag in value.flags:
            flags |= _RE_FLAGS[flag]
        rx = re.compile(str(value.regexp), flags)
        return lambda v: v is not None and rx.search(field_text(v)) is not None
    if isinstance(value, SigmaCIDRExpression):
        return _cidr_test(value.network)
    raise UnsupportedRuleError(f"value type {type(value).__name__}")


def _cidr_test(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> Callable[[object], bool]:
    def test(v: object) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ipaddress.ip_address(v) in network
        except ValueError:
            return False

    return test


def _each(get: Getter, test: Callable[[object], bool]) -> Predicate:
    """Apply a value test to a field; a list field (dns answers) matches if any element does."""

    def predicate(rec: RuleRecord) -> bool:
        v = get(rec)
        if isinstance(v, list):
            return any(test(x) for x in v)
        return test(v)

    return predicate


def _null(get: Getter) -> Predicate:
    def predicate(rec: RuleRecord) -> bool:
        v = get(rec)
        return v is None or v == "" or v == []

    return predicate


def _exists(get: Getter, want: bool) -> Predicate:
    return lambda rec: (get(rec) is not None) is want


def _fieldref(get: Getter, other: Getter, ref: SigmaFieldReference) -> Predicate:
    """Compare two fields of one record (exact text; startswith/endswith/contains by flags)."""

    def predicate(rec: RuleRecord) -> bool:
        a, b = get(rec), other(rec)
        if a is None or b is None:
            return False
        x, y = field_text(a), field_text(b)
        if ref.starts_with and ref.ends_with:
            return y in x
        if ref.starts_with:
            return x.startswith(y)
        if ref.ends_with:
            return x.endswith(y)
        return x == y

    return predicate


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 2:
        a, b = preds
        return lambda rec: a(rec) and b(rec)
    return lambda rec: all(p(rec) for p in preds)


def _any(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda rec: a(rec) or b(rec)
    return lambda rec: any(p(rec) for p in preds)


def _not(pred: Predicate) -> Predicate:
    return lambda rec: not pred(rec)


def _and_literals(parts: Iterable[Literals]) -> Literals:
    """Any one child's requirement holds for an AND; take the most selective (longest)."""
    known = [lits for lits in parts if lits is not None]
    if not known:
        return None
    return max(known, key=lambda lits: (min(len(s) for s in lits), -len(lits)))


def _or_literals(parts: Iterable[Literals]) -> Literals:
    """An OR needs a requirement from every branch; their union is the requirement."""
    union: set[str] = set()
    for lits in parts:
        if lits is None:
            return None
        union |= lits
    return frozenset(union)
