"""Three-way merge of a tenant's override with a new shipped version of the rule it overrides.

Works on the parsed YAML (nested mappings): base is the shipped version the override was made
from, ours the tenant's override, theirs the new shipped version. A key only the tenant changed
keeps the tenant's value, a key only upstream changed takes upstream's, a key both changed the
same way takes that value, and a key both changed differently is a conflict: the merged rule
keeps the tenant's value and the conflict is reported, so no change of either side is silently
lost. Mappings are merged key by key, recursively; any other value (lists included) is atomic:
a list is a Sigma value set or a tag list whose order and members are one decision, and merging
two edits of it element by element could make a detection neither side wrote.

Written by hand: no maintained Python library merges mappings three ways *and* reports
conflicts (deepdiff and jsonmerge diff or overlay two documents, not three).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from a2z.rules.errors import RuleSyntaxError

Path = tuple[str, ...]


class _Missing:
    """A key absent on one side (distinct from a key whose value is null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Stands for "this side has no such key" in conflicts (and in ``merge3``'s arguments)."""


@dataclass(frozen=True, slots=True)
class MergeConflict:
    """A key both sides changed differently; the merged rule holds ``ours``."""

    path: Path  # keys from the document root, e.g. ("detection", "selection")
    base: object  # the value in the version the override was made from (MISSING: absent)
    ours: object  # the tenant's value, kept
    theirs: object  # upstream's new value, not applied

    def describe(self) -> dict[str, object]:
        """A JSON-ready account of the conflict (absent values are None, dates ISO text)."""
        return {
            "path": ".".join(self.path),
            "base": _plain(self.base),
            "ours": _plain(self.ours),
            "theirs": _plain(self.theirs),
        }


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged document and the conflicts it kept the tenant's value for."""

    merged: dict[str, Any]
    conflicts: tuple[MergeConflict, ...]


def merge3(
    base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> MergeResult:
    """Merge the tenant's and upstream's changes to ``base`` (see the module docstring)."""
    conflicts: list[MergeConflict] = []
    merged = _merge_mapping(base, ours, theirs, (), conflicts)
    return MergeResult(merged, tuple(conflicts))


def _merge_mapping(
    base: Mapping[str, Any],
    ours: Mapping[str, Any],
    theirs: Mapping[str, Any],
    path: Path,
    conflicts: list[MergeConflict],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Our key order first (the tenant's document stays recognisable), then upstream's new keys.
    keys = (
        list(ours)
        + [k for k in theirs if k not in ours]
        + [k for k in base if k not in ours and k not in theirs]
    )
    for key in keys:
        value = _merge_value(
            base.get(key, MISSING), ours.get(key, MISSING), theirs.get(key, MISSING),
            (*path, str(key)), conflicts,
        )  # fmt: skip
        if value is not MISSING:
            out[key] = value
    return out


def _merge_value(
    base: Any, ours: Any, theirs: Any, path: Path, conflicts: list[MergeConflict]
) -> Any:
    if _same(ours, theirs):
        return ours
    if _same(ours, base):
        return theirs  # only upstream changed it (MISSING: upstream removed it)
    if _same(theirs, base):
        return ours  # only the tenant changed it
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        # Both edited inside one mapping: merge its keys; a mapping new on both sides merges
        # against an empty base, so equal additions agree and different ones conflict.
        inner_base = base if isinstance(base, Mapping) else {}
        return _merge_mapping(inner_base, ours, theirs, path, conflicts)
    conflicts.append(MergeConflict(path, base, ours, theirs))
    return ours


def _same(a: Any, b: Any) -> bool:
    # Type-strict equality: YAML's 1 and true and 1.0 are different rule values, but Python
    # calls them equal.
    if a is MISSING or b is MISSING:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _plain(value: object) -> object:
    if value is MISSING:
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_document(source: str) -> dict[str, Any]:
    """Sigma YAML as a mapping, for merging; RuleSyntaxError if it is not one."""
    try:
        doc = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise RuleSyntaxError(f"invalid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise RuleSyntaxError("a Sigma rule is a YAML mapping")
    return doc


def dump_document(doc: Mapping[str, Any]) -> str:
    """A merged document as YAML text, keys in the merged order."""
    return yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=100)
