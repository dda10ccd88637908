"""Sigma correlation rules (specification v2) evaluated over a stream of records, per tenant.

pySigma parses the correlation documents; their base rules compile with ``a2z.rules.compile``.
A ``Correlator`` feeds each record's base-rule matches, in timestamp order, into per-group
windows and raises ``Alert`` records. It runs in the backend's detect role, one state per tenant.

Semantics (docs/detections-intel.md says why):

- Matches are re-ordered by timestamp: a tenant's watermark is its newest timestamp minus
  ``tolerance``; matches at or before it are evaluated in (ts, arrival) order, older arrivals
  are late (counted, dropped).
- Lower-bound conditions (``gt``/``gte``) slide: they fire on the first match whose window
  ``[ts - timespan, ts]`` satisfies them, and the group starts afresh.
- Conditions with an upper bound (``lt``, ``lte``, ``eq``, ``neq``, ranges) can only be decided
  when a window is over: a group's window opens at its first match and is judged once the
  watermark passes ``start + timespan``.
- ``temporal_ordered`` fires when the rules' matches occur in the listed order within
  ``timespan``.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError

from a2z.records import Alert, Severity
from a2z.rules.compile import CompiledRule, compile_yaml
from a2z.rules.engine import RuleSet
from a2z.rules.errors import RuleError, RuleSyntaxError, UnsupportedRuleError
from a2z.rules.fields import (
    DNS_FIELDS,
    PROXY_FIELDS,
    WEBSERVER_FIELDS,
    ZEEK_HTTP_FIELDS,
    RuleRecord,
    accessor,
)

__all__ = [
    "SWEEP_EVERY",
    "Condition",
    "CorrelationLoad",
    "CorrelationRule",
    "CorrelationSet",
    "CorrelationSettings",
    "CorrelationStats",
    "CorrelationType",
    "Correlator",
    "compile_correlations",
    "load_correlation_directory",
]


class CorrelationType(StrEnum):
    """The correlation types we evaluate (Sigma's metric types are reported unsupported)."""

    EVENT_COUNT = "event_count"
    VALUE_COUNT = "value_count"
    TEMPORAL = "temporal"
    TEMPORAL_ORDERED = "temporal_ordered"


_OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda n, v: n > v,
    "gte": lambda n, v: n >= v,
    "lt": lambda n, v: n < v,
    "lte": lambda n, v: n <= v,
    "eq": lambda n, v: n == v,
    "neq": lambda n, v: n != v,
}
_SEVERITY = {
    "informational": Severity.LOW,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
    "critical": Severity.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A conjunction of count bounds, e.g. ``gt: 100, lte: 200`` (the spec's range form)."""

    bounds: tuple[tuple[str, float], ...]  # (operator, value) pairs, all of which must hold
    # Derived once (they are read per match): only lower bounds, so more matches can only
    # help and it may fire as soon as it holds; and a count past which the truth value no
    # longer changes (distinct-value sets stop growing there).
    sliding: bool = field(init=False)
    saturation: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sliding", all(op in ("gt", "gte") for op, _ in self.bounds))
        top = max(value for _, value in self.bounds)
        object.__setattr__(self, "saturation", math.floor(top) + 1)

    def holds(self, count: int) -> bool:
        return all(_OPS[op](count, value) for op, value in self.bounds)


@dataclass(frozen=True, slots=True)
class _Event:
    """A match fed to a correlation: a base rule's record, or a correlation's output."""

    ts: float  # the record's timestamp (for a correlation's output, its trigger's)
    record: RuleRecord  # the record that triggered it: the alert's endpoints come from it
    uids: tuple[str, ...]  # evidence record uids
    fields: Mapping[str, object] | None = None  # a correlation output's group-by values


Extract = Callable[[_Event], object]


@dataclass(frozen=True, slots=True)
class _Input:
    """One referenced rule as one correlation reads it."""

    ref: str  # node key of the referenced rule (base rule or correlation)
    positions: tuple[int, ...]  # where it stands in the correlation's ``rules`` list
    group: tuple[Extract, ...]  # the group-by values (aliases resolved for this rule)
    value: tuple[Extract, ...]  # value_count's field(s); empty for the other types


@dataclass(frozen=True, slots=True)
class CorrelationRule:
    """One compiled correlation: what it counts, how it groups, when it fires."""

    key: str  # node key: the Sigma id, else name, else title
    rule_id: str  # the alert's rule_id
    name: str | None  # the Sigma ``name`` other correlations may reference it by
    title: str
    type: CorrelationType
    severity: Severity
    attack: tuple[str, ...]  # ATT&CK ids of the correlation's tags, then of its rules' tags
    timespan: float  # seconds
    group_by: tuple[str, ...]  # as written (alias names where aliases are used)
    condition: Condition
    rules: tuple[str, ...]  # the references as written
    inputs: tuple[_Input, ...]
    emits: bool  # False when a correlation using it has ``generate: false`` (the default)
    path: str | None = None


@dataclass(frozen=True, slots=True)
class CorrelationSettings:
    """Bounds on correlation state and on how disordered a tenant's stream may be."""

    tolerance: float = 30.0  # seconds a match may arrive behind the tenant's newest timestamp
    max_groups: int = 100_000  # open groups per correlation per tenant; past it the least
    # recently updated group is evicted (counted), so one noisy tenant cannot exhaust memory
    max_evidence: int = 100  # record uids an alert carries (the most recent)
    max_future: float | None = 3600.0  # a timestamp this far past the clock is dropped: one
    # agent with a wrong clock would otherwise push the watermark and make all else late


@dataclass(slots=True)
class CorrelationStats:
    """Counters of one tenant (or, summed, of all); read them at any time."""

    events: int = 0  # base-rule matches fed in
    late: int = 0  # matches dropped: older than the watermark
    future: int = 0  # records dropped: timestamp too far past the clock
    ungrouped: int = 0  # matches without a group-by (or value_count) field value
    evicted: int = 0  # groups dropped by the max_groups cap
    expired: int = 0  # idle groups whose window had passed
    alerts: int = 0  # alerts raised

    def add(self, other: CorrelationStats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True)
class CorrelationLoad:
    """What compiling correlation documents gave: the runnable set and each failure."""

    rules: CorrelationSet
    errors: list[RuleError]


class CorrelationSet:
    """Compiled correlations and the base rules they reference; immutable, shareable."""

    def __init__(
        self,
        correlations: Sequence[CorrelationRule],
        base: Mapping[str, CompiledRule],
        silent_rule_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.correlations = tuple(correlations)
        # Base rules that only feed correlations (generate: false): no alerts of their own.
        self.silent_rule_ids = silent_rule_ids
        self.base_rules = dict(base)  # node key -> compiled base rule (only those referenced)
        self.ruleset = RuleSet(self.base_rules.values())
        self._base_key = {id(rule): key for key, rule in self.base_rules.items()}
        self.consumers: dict[str, list[tuple[int, _Input]]] = {}
        for i, corr in enumerate(self.correlations):
            for inp in corr.inputs:
                self.consumers.setdefault(inp.ref, []).append((i, inp))

    def __len__(self) -> int:
        return len(self.correlations)

    def matches(self, record: RuleRecord) -> list[str]:
        """Node keys of the referenced base rules that match the record."""
        return [self._base_key[id(rule)] for rule in self.ruleset.matching(record)]


# ---------------------------------------------------------------------------------------------
# Compiling


_TAXONOMY: dict[str, Mapping[str | None, str | list[str]]] = {
    "proxy": PROXY_FIELDS,
    "webserver": WEBSERVER_FIELDS,
    "dns": DNS_FIELDS,
    "firewall": {k: v for k, v in DNS_FIELDS.items() if str(v).startswith("id.")},
}


@dataclass(slots=True)
class _Base:
    """A base rule document and, once compiled, its rule."""

    doc: dict[str, Any]
    path: str | None
    compiled: CompiledRule | None = None
    error: RuleError | None = None


@dataclass(slots=True)
class _Corr:
    doc: dict[str, Any]
    path: str | None
    parsed: SigmaCorrelationRule | None = None
    compiled: CorrelationRule | None = None
    error: RuleError | None = None


def _doc_id(doc: Mapping[str, Any]) -> str | None:
    value = doc.get("id")
    return str(value) if value is not None else None


def _node_key(doc: Mapping[str, Any]) -> str:
    return _doc_id(doc) or str(doc.get("name") or doc.get("title") or "")


def load_correlation_directory(*roots: Path) -> CorrelationLoad:
    """Compile the correlations in every ``*.yml`` under the roots (references may cross files)."""
    sources: list[tuple[str | None, str]] = []
    errors: list[RuleError] = []
    for root in roots:
        for path in sorted(root.rglob("*.yml")):
            try:
                sources.append((str(path), path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(RuleError(f"unreadable: {exc}", path=str(path)))
    load = compile_correlations(sources)
    return CorrelationLoad(load.rules, errors + load.errors)


def compile_correlations(sources: Iterable[tuple[str | None, str]]) -> CorrelationLoad:
    """Compile the correlation documents among ``(path, yaml)`` sources; failures are reported.

    Rules without a ``correlation`` section are base rules: compiled only when a correlation
    references them (by id or name). A correlation that fails takes down those that use it.
    """
    bases: list[_Base] = []
    corrs: list[_Corr] = []
    errors: list[RuleError] = []
    for path, text in sources:
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            errors.append(RuleSyntaxError(f"invalid YAML: {exc}", path=path))
            continue
        for doc in docs:
            if not isinstance(doc, dict):
                errors.append(RuleSyntaxError("a Sigma document must be a mapping", path=path))
            elif "correlation" in doc:
                corrs.append(_Corr(doc, path))
            else:
                bases.append(_Base(doc, path))
    lookup: dict[str, _Base | _Corr] = {}
    nodes: list[_Base | _Corr] = [*bases, *corrs]
    for node in nodes:
        for ref in (_doc_id(node.doc), node.doc.get("name")):
            if isinstance(ref, str) and ref:
                lookup.setdefault(ref, node)
    compiler = _Compiler(lookup)
    for corr in corrs:
        # A failure stays on its node and is reported below, once per correlation.
        with contextlib.suppress(RuleError):
            compiler.correlation(corr)
    # A correlation referenced by another with generate: false raises no alerts of its own.
    silenced = {
        _node_key(ref_node.doc)
        for corr in corrs
        if corr.compiled is not None and corr.parsed is not None and not corr.parsed.generate
        for ref in corr.compiled.rules
        if isinstance(ref_node := lookup[ref], _Corr)
    }
    ready = [
        replace(c.compiled, emits=c.compiled.key not in silenced)
        for c in corrs
        if c.compiled is not None
    ]
    errors.extend(c.error for c in corrs if c.error is not None)
    base = {
        _node_key(b.doc): b.compiled
        for b in bases
        if b.compiled is not None and any(b is lookup.get(r) for c in ready for r in c.rules)
    }
    # Base rules referenced only by correlations with generate: false feed them and nothing else.
    loud = {
        _node_key(lookup[r].doc)
        for c in corrs
        if c.compiled is not None and c.parsed is not None and c.parsed.generate
        for r in c.compiled.rules
    }
    silent = frozenset(rule.rule_id for key, rule in base.items() if key not in loud)
    return CorrelationLoad(CorrelationSet(ready, base, silent), errors)


class _Compiler:
    """Resolves references depth-first so inner correlations compile before their users."""

    def __init__(self, lookup: Mapping[str, _Base | _Corr]) -> None:
        self.lookup = lookup
        self.visiting: set[int] = set()

    def base(self, node: _Base) -> CompiledRule:
        if node.compiled is None and node.error is None:
            try:
                node.compiled = compile_yaml(yaml.safe_dump(node.doc), path=node.path)
            except RuleError as exc:
                node.error = exc
        if node.error is not None:
            raise node.error
        assert node.compiled is not None
        return node.compiled

    def correlation(self, node: _Corr) -> CorrelationRule:
        if node.compiled is not None:
            return node.compiled
        if node.error is not None:
            raise node.error
        if id(node) in self.visiting:
            raise RuleSyntaxError("correlation rules reference each other in a cycle")
        self.visiting.add(id(node))
        rule_id = _doc_id(node.doc) or str(node.doc.get("title"))
        try:
            node.parsed = _parse(node.doc, node.path)
            node.compiled = self._compile(node.parsed, node.doc, node.path)
        except RuleError as exc:
            node.error = exc.located(path=node.path, rule_id=rule_id)
            raise node.error from None
        finally:
            self.visiting.discard(id(node))
        return node.compiled

    def _compile(
        self, parsed: SigmaCorrelationRule, doc: Mapping[str, Any], path: str | None
    ) -> CorrelationRule:
        try:
            ctype = CorrelationType(parsed.type.name.lower())
        except ValueError:
            raise UnsupportedRuleError(f"correlation type {parsed.type.name.lower()}") from None
        refs = tuple(r.reference for r in parsed.rules or ())
        if not refs:
            raise UnsupportedRuleError("correlation without a rules list")
        condition = _condition(ctype, doc["correlation"], len(refs))
        group_by = tuple(parsed.group_by or ())
        aliases: dict[str, dict[str, str]] = {
            a.alias: {ref.reference: name for ref, name in a.mapping.items()}
            for a in parsed.aliases
        }
        value_fields: tuple[str, ...] = ()
        if ctype is CorrelationType.VALUE_COUNT:
            fieldref = doc["correlation"]["condition"]["field"]
            value_fields = (fieldref,) if isinstance(fieldref, str) else tuple(map(str, fieldref))
        attack: list[str] = [t.name.upper() for t in parsed.tags if _is_technique(t)]
        inputs: list[_Input] = []
        for ref in dict.fromkeys(refs):  # each distinct reference once, in order
            node = self.lookup.get(ref)
            if node is None:
                raise RuleSyntaxError(f"references rule '{ref}', which is not loaded")
            names = {ref, _doc_id(node.doc), node.doc.get("name")}
            positions = tuple(i for i, r in enumerate(refs) if r == ref)

            def resolve(name: str, names: set[Any] = names, ref: str = ref) -> str:
                mapping = aliases.get(name)
                if mapping is None:
                    return name
                for alias_ref, target in mapping.items():
                    if alias_ref in names:
                        return target
                raise RuleSyntaxError(f"alias '{name}' has no field for rule '{ref}'")

            if isinstance(node, _Base):
                compiled = self.base(node)
                attack.extend(compiled.attack)
                getter = _base_getter(compiled, node.doc)
            else:
                inner = self.correlation(node)
                if not inner.condition.sliding:
                    raise UnsupportedRuleError(
                        f"chaining correlation '{ref}', whose condition has an upper bound"
                    )
                attack.extend(inner.attack)
                getter = _output_getter(inner)
            inputs.append(
                _Input(
                    ref=_node_key(node.doc),
                    positions=positions,
                    group=tuple(getter(resolve(g)) for g in group_by),
                    value=tuple(getter(resolve(v)) for v in value_fields),
                )
            )
        level = parsed.level.name.lower() if parsed.level else "medium"
        rule_id = str(parsed.id) if parsed.id else parsed.title
        return CorrelationRule(
            key=_node_key(doc),
            rule_id=rule_id,
            name=parsed.name,
            title=parsed.title,
            type=ctype,
            severity=_SEVERITY.get(level, Severity.MEDIUM),
            attack=tuple(dict.fromkeys(attack)),
            timespan=float(parsed.timespan.seconds),
            group_by=group_by,
            condition=condition,
            rules=refs,
            inputs=tuple(inputs),
            emits=True,
            path=path,
        )


def _is_technique(tag: Any) -> bool:
    name = str(tag.name)
    return bool(tag.namespace == "attack" and name[:1] in "tT" and name[1:5].isdigit())


def _parse(doc: dict[str, Any], path: str | None) -> SigmaCorrelationRule:
    """pySigma's parse; it takes one condition bound, so a range is trimmed to its first."""
    section = doc.get("correlation")
    if not isinstance(section, dict):
        raise RuleSyntaxError("'correlation' must be a mapping")
    cond = section.get("condition")
    if isinstance(cond, dict):
        ops = [k for k in cond if k in _OPS]
        trimmed = {k: v for k, v in cond.items() if k not in ops[1:]}
        doc = {**doc, "correlation": {**section, "condition": trimmed}}
    try:
        return SigmaCorrelationRule.from_dict(doc)
    except SigmaError as exc:
        raise RuleSyntaxError(str(exc), path=path) from exc
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise RuleSyntaxError(f"malformed correlation: {exc!r}", path=path) from exc


def _condition(ctype: CorrelationType, section: Mapping[str, Any], nrules: int) -> Condition:
    """The condition's bounds; temporal types default to all rules (``gte`` their count)."""
    cond = section.get("condition")
    if isinstance(cond, str):
        raise UnsupportedRuleError("extended (boolean) temporal condition")
    if cond is None:
        return Condition((("gte", float(nrules)),))
    bounds: list[tuple[str, float]] = []
    for op, value in cond.items():
        if op in ("field", "percentile"):
            continue
        if op not in _OPS or isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleSyntaxError(f"invalid condition item {op}: {value!r}")
        bounds.append((op, float(value)))
    if not bounds:
        raise RuleSyntaxError("condition without a bound (gt, gte, lt, lte, eq, neq)")
    if ctype is CorrelationType.VALUE_COUNT and not isinstance(cond.get("field"), str | list):
        raise RuleSyntaxError("value_count condition without a field")
    condition = Condition(tuple(bounds))
    if ctype is CorrelationType.TEMPORAL_ORDERED and condition.bounds != (("gte", nrules),):
        raise UnsupportedRuleError("temporal_ordered condition other than all rules in order")
    return condition


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _base_getter(rule: CompiledRule, doc: Mapping[str, Any]) -> Callable[[str], Extract]:
    """Field name -> extractor for events of a base rule (taxonomy names mapped as in rules)."""
    logsource = doc.get("logsource") or {}
    mapping: Mapping[str | None, str | list[str]] = {}
    if logsource.get("category") in _TAXONOMY:
        mapping = _TAXONOMY[logsource["category"]]
    elif logsource.get("product") == "zeek" and logsource.get("service") == "http":
        mapping = ZEEK_HTTP_FIELDS

    def getter(name: str) -> Extract:
        target = mapping.get(name, name)
        get = accessor(rule.record_type, target if isinstance(target, str) else target[0])
        return lambda ev: _hashable(get(ev.record))

    return getter


def _output_getter(inner: CorrelationRule) -> Callable[[str], Extract]:
    """Field name -> extractor for a correlation's output: only its group-by values exist."""

    def getter(name: str) -> Extract:
        if name not in inner.group_by:
            raise UnsupportedRuleError(
                f"field '{name}' is not a group-by field of correlation '{inner.key}'"
            )
        return lambda ev: ev.fields.get(name) if ev.fields is not None else None

    return getter


# ---------------------------------------------------------------------------------------------
# Evaluating

GroupKey = tuple[object, ...]
SWEEP_EVERY = 5.0  # seconds of event time between sweeps of a tenant's windows and groups


@dataclass(slots=True)
class _Sliding:
    """A lower-bound group: the window's entries by aggregation key, oldest first."""

    last_ts: float
    entries: OrderedDict[object, tuple[float, tuple[str, ...]]] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class _Window:
    """An upper-bound group: one window from its first match, judged when it is over."""

    start: float
    last_ts: float
    last: _Event
    count: int = 0
    distinct: set[object] = field(default_factory=set)
    uids: deque[str] = field(default_factory=deque)


@dataclass(slots=True)
class _Chain:
    """A temporal_ordered group: per prefix of the rule list, the latest-starting partial match."""

    last_ts: float
    best: list[tuple[float, tuple[str, ...]] | None]


_Group = _Sliding | _Window | _Chain


@dataclass(slots=True)
class _Tenant:
    """One tenant's correlation state."""

    groups: list[OrderedDict[GroupKey, _Group]]  # per correlation, least recently updated first
    closing: list[deque[tuple[float, GroupKey, _Window]]]  # per correlation: window ends
    max_ts: float = -math.inf
    next_sweep: float = -math.inf  # watermark at which windows are next judged and expired
    seq: int = 0
    pending: list[tuple[float, int, str, RuleRecord]] = field(default_factory=list)  # heap
    stats: CorrelationStats = field(default_factory=CorrelationStats)


class Correlator:
    """Evaluates a CorrelationSet over records, with separate bounded state per tenant.

    Not thread-safe: one per detect worker (the bus delivers each tenant to one worker).
    """

    def __init__(
        self,
        rules: CorrelationSet,
        settings: CorrelationSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.settings = settings or CorrelationSettings()
        self._clock = clock
        self._tenants: dict[str, _Tenant] = {}

    def stats(self, tenant: str) -> CorrelationStats:
        """The tenant's counters (zeros for a tenant not seen)."""
        st = self._tenants.get(tenant)
        return st.stats if st is not None else CorrelationStats()

    @property
    def totals(self) -> CorrelationStats:
        out = CorrelationStats()
        for st in self._tenants.values():
            out.add(st.stats)
        return out

    def open_groups(self, tenant: str) -> int:
        st = self._tenants.get(tenant)
        return sum(len(t) for t in st.groups) if st is not None else 0

    def _tenant(self, tenant: str) -> _Tenant:
        st = self._tenants.get(tenant)
        if st is None:
            n = len(self.rules.correlations)
            st = self._tenants[tenant] = _Tenant(
                groups=[OrderedDict() for _ in range(n)], closing=[deque() for _ in range(n)]
            )
        return st

    def process(self, tenant: str, record: RuleRecord) -> list[Alert]:
        """Feed one record; returns the alerts that became certain with it."""
        st = self._tenant(tenant)
        limit = self.settings.max_future
        if limit is not None and record.ts > self._clock() + limit:
            st.stats.future += 1
            return []
        matched = self.rules.matches(record) if self.rules.consumers else []
        watermark = st.max_ts - self.settings.tolerance
        if matched and record.ts < watermark:
            st.stats.late += len(matched)
            return []
        for key in matched:
            st.seq += 1
            heapq.heappush(st.pending, (record.ts, st.seq, key, record))
        st.stats.events += len(matched)
        if record.ts <= st.max_ts:
            return self._release(st, watermark) if matched else []
        st.max_ts = record.ts
        return self._release(st, record.ts - self.settings.tolerance)

    def advance(self, tenant: str, ts: float) -> list[Alert]:
        """Time has reached ``ts`` for the tenant without records (an idle tenant's clock).

        Only call it with a time the tenant's own records would reach: matches older than
        ``ts - tolerance`` become late.
        """
        st = self._tenant(tenant)
        st.max_ts = max(st.max_ts, ts)
        return self._release(st, st.max_ts - self.settings.tolerance, sweep=True)

    def flush(self, tenant: str) -> list[Alert]:
        """End of the stream: evaluate every pending match and judge every open window."""
        return self._release(self._tenant(tenant), math.inf, sweep=True)

    def _release(self, st: _Tenant, watermark: float, *, sweep: bool = False) -> list[Alert]:
        out: list[Alert] = []
        pending = st.pending
        while pending and pending[0][0] <= watermark:
            ts, _, key, record = heapq.heappop(pending)
            ev = _Event(ts, record, (record.uid,))
            for ci, inp in self.rules.consumers.get(key, ()):
                self._feed(st, ci, inp, ev, out)
        # Judging ended windows and dropping idle groups walks every correlation, so it runs
        # once per SWEEP_EVERY of event time, not per record. Waiting changes no result: a
        # window is also judged when its group's next match arrives, and an idle group's
        # entries would all have left its window by then.
        if not sweep and watermark < st.next_sweep:
            return out
        st.next_sweep = watermark + SWEEP_EVERY
        for ci, corr in enumerate(self.rules.correlations):
            table = st.groups[ci]
            closing = st.closing[ci]
            while closing and closing[0][0] < watermark:
                _end, gkey, window = closing.popleft()
                if table.get(gkey) is window:
                    del table[gkey]
                    self._judge(st, ci, gkey, window, out)
            horizon = watermark - corr.timespan
            while table:
                gkey, group = next(iter(table.items()))
                if group.last_ts >= horizon or isinstance(group, _Window):
                    break
                table.popitem(last=False)
                st.stats.expired += 1
        return out

    def _feed(self, st: _Tenant, ci: int, inp: _Input, ev: _Event, out: list[Alert]) -> None:
        corr = self.rules.correlations[ci]
        gkey = tuple(get(ev) for get in inp.group)
        agg: object
        if corr.type is CorrelationType.VALUE_COUNT:
            values = tuple(get(ev) for get in inp.value)
            if any(v is None for v in values):
                st.stats.ungrouped += 1
                return
            agg = values[0] if len(values) == 1 else values
        elif corr.type is CorrelationType.TEMPORAL:
            agg = inp.positions[0]
        else:
            st.seq += 1
            agg = st.seq
        if any(v is None for v in gkey):
            st.stats.ungrouped += 1
            return
        table = st.groups[ci]
        group = table.get(gkey)
        if group is not None:
            table.move_to_end(gkey)
        span = corr.timespan
        fired: tuple[str, ...] | None = None
        if corr.type is CorrelationType.TEMPORAL_ORDERED:
            if group is None:
                group = table[gkey] = _Chain(ev.ts, [None] * (len(corr.rules) + 1))
            assert isinstance(group, _Chain)
            chain = _advance_chain(group, inp.positions, ev, span)
            fired = self._evidence(chain) if chain is not None else None
        elif corr.condition.sliding:
            if group is None:
                group = table[gkey] = _Sliding(ev.ts)
            assert isinstance(group, _Sliding)
            entries = group.entries
            entries.pop(agg, None)
            entries[agg] = (ev.ts, ev.uids)
            horizon = ev.ts - span
            while next(iter(entries.values()))[0] < horizon:
                entries.popitem(last=False)
            if corr.condition.holds(len(entries)):
                fired = self._evidence(u for _, uids in entries.values() for u in uids)
                entries.clear()
        else:
            if isinstance(group, _Window) and ev.ts > group.start + span:
                del table[gkey]
                self._judge(st, ci, gkey, group, out)
                group = None
            if group is None:
                group = table[gkey] = _Window(ev.ts, ev.ts, ev)
                st.closing[ci].append((ev.ts + span, gkey, group))
            assert isinstance(group, _Window)
            group.count += 1
            if len(group.distinct) < corr.condition.saturation:
                group.distinct.add(agg)
            group.last = ev
            group.uids.extend(ev.uids)
            while len(group.uids) > self.settings.max_evidence:
                group.uids.popleft()
        group.last_ts = ev.ts
        if len(table) > self.settings.max_groups:
            table.popitem(last=False)
            st.stats.evicted += 1
        if fired is not None:
            self._fire(st, ci, gkey, ev, fired, out)

    def _evidence(self, uids: Iterable[str]) -> tuple[str, ...]:
        """The most recent distinct uids, oldest first, at most ``max_evidence``."""
        unique = list(dict.fromkeys(uids))
        return tuple(unique[-self.settings.max_evidence :])

    def _judge(
        self, st: _Tenant, ci: int, gkey: GroupKey, window: _Window, out: list[Alert]
    ) -> None:
        corr = self.rules.correlations[ci]
        n = window.count if corr.type is CorrelationType.EVENT_COUNT else len(window.distinct)
        if corr.condition.holds(n):
            self._fire(st, ci, gkey, window.last, tuple(window.uids), out)

    def _fire(
        self,
        st: _Tenant,
        ci: int,
        gkey: GroupKey,
        trigger: _Event,
        uids: tuple[str, ...],
        out: list[Alert],
    ) -> None:
        corr = self.rules.correlations[ci]
        if corr.emits:
            st.stats.alerts += 1
            rec = trigger.record
            out.append(
                Alert(
                    ts=trigger.ts,
                    uid=rec.uid,
                    orig_h=rec.orig_h,
                    orig_p=rec.orig_p,
                    resp_h=rec.resp_h,
                    resp_p=rec.resp_p,
                    rule_id=corr.rule_id,
                    title=corr.title,
                    severity=corr.severity,
                    attack=list(corr.attack),
                    uids=list(uids),
                    dedup_key="|".join([corr.rule_id, *map(str, gkey)]),
                )
            )
        consumers = self.rules.consumers.get(corr.key)
        if consumers:
            derived = _Event(
                trigger.ts, trigger.record, uids, dict(zip(corr.group_by, gkey, strict=True))
            )
            for cj, inp in consumers:
                self._feed(st, cj, inp, derived, out)


def _advance_chain(
    group: _Chain, positions: tuple[int, ...], ev: _Event, span: float
) -> tuple[str, ...] | None:
    """Extend partial ordered matches with ``ev``; the full match's uids once complete.

    ``best[k]`` is the partial match of the first k rules with the latest start (the one
    with most time left). Positions are visited from the last so that one event never fills
    two places of the same match.
    """
    best = group.best
    horizon = ev.ts - span
    for k, slot in enumerate(best):
        if slot is not None and slot[0] < horizon:
            best[k] = None
    for pos in sorted(positions, reverse=True):
        if pos == 0:
            candidate: tuple[float, tuple[str, ...]] | None = (ev.ts, ev.uids)
        else:
            prev = best[pos]
            candidate = (prev[0], prev[1] + ev.uids) if prev is not None else None
        current = best[pos + 1]
        if candidate is not None and (current is None or candidate[0] >= current[0]):
            best[pos + 1] = candidate
    done = best[-1]
    if done is None:
        return None
    for k in range(len(best)):
        best[k] = None
    return done[1]
