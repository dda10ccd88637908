"""Three-way merge of tenant overrides with new shipped rules: cases and properties."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from a2z.rules import compile_yaml
from a2z.rules.merge import MISSING, dump_document, load_document, merge3

SHIPPED_V1 = """\
title: Suspicious DNS Query with B64 Encoded String
id: 4153a907-2451-4e4f-a578-c52bb6881432
status: test
description: Detects suspicious DNS queries using base64 encoding
author: Florian Roth (Nextron Systems)
date: 2018-05-10
tags:
    - attack.exfiltration
    - attack.t1048.003
logsource:
    category: dns
detection:
    selection:
        query|contains: '==.'
    condition: selection
falsepositives:
    - Unknown
level: medium
"""


def doc(text: str) -> dict[str, Any]:
    return load_document(text)


def test_no_change_on_either_side_is_the_base() -> None:
    base = doc(SHIPPED_V1)
    result = merge3(base, base, base)
    assert result.merged == base
    assert result.conflicts == ()


def test_tenant_only_change_is_kept() -> None:
    base = doc(SHIPPED_V1)
    ours = doc(SHIPPED_V1)
    ours["level"] = "high"
    ours["detection"]["filter"] = {"query|endswith": ".corp.example"}
    ours["detection"]["condition"] = "selection and not filter"
    result = merge3(base, ours, base)
    assert result.merged == ours
    assert result.conflicts == ()


def test_upstream_only_change_is_taken() -> None:
    base = doc(SHIPPED_V1)
    theirs = doc(SHIPPED_V1)
    theirs["description"] = "Detects DNS queries carrying base64 text"
    theirs["references"] = ["https://github.com/krmaxwell/dns-exfiltration"]
    del theirs["status"]
    result = merge3(base, base, theirs)
    assert result.merged == theirs
    assert "status" not in result.merged  # an upstream removal is a change like any other
    assert result.conflicts == ()


def test_both_sides_change_different_keys_without_conflict() -> None:
    base = doc(SHIPPED_V1)
    ours = doc(SHIPPED_V1)
    ours["level"] = "high"
    ours["detection"]["filter"] = {"query|endswith": ".corp.example"}
    ours["detection"]["condition"] = "selection and not filter"
    theirs = doc(SHIPPED_V1)
    theirs["description"] = "Detects DNS queries carrying base64 text"
    theirs["references"] = ["https://example.org/b64"]
    theirs["detection"]["selection"] = {"query|contains": ["==.", "=."]}
    result = merge3(base, ours, theirs)
    assert result.conflicts == ()
    merged = result.merged
    assert merged["level"] == "high"  # ours
    assert merged["detection"]["filter"] == {"query|endswith": ".corp.example"}  # ours
    assert merged["detection"]["condition"] == "selection and not filter"  # ours
    assert merged["description"] == "Detects DNS queries carrying base64 text"  # theirs
    assert merged["references"] == ["https://example.org/b64"]  # theirs, new key
    assert merged["detection"]["selection"] == {"query|contains": ["==.", "=."]}  # theirs
    # The merged text is still a rule we run, with both sides' changes in effect.
    rule = compile_yaml(dump_document(merged))
    assert rule.severity.value == "high"


def test_both_sides_change_one_key_differently_is_a_conflict_keeping_ours() -> None:
    base = doc(SHIPPED_V1)
    ours = doc(SHIPPED_V1)
    ours["level"] = "low"
    theirs = doc(SHIPPED_V1)
    theirs["level"] = "high"
    theirs["description"] = "new text"
    result = merge3(base, ours, theirs)
    assert result.merged["level"] == "low"
    assert result.merged["description"] == "new text"
    assert [c.describe() for c in result.conflicts] == [
        {"path": "level", "base": "medium", "ours": "low", "theirs": "high"}
    ]


def test_same_change_on_both_sides_is_no_conflict() -> None:
    base = doc(SHIPPED_V1)
    ours = doc(SHIPPED_V1)
    ours["level"] = "high"
    result = merge3(base, ours, ours)
    assert result.merged == ours
    assert result.conflicts == ()


def test_tenant_removal_against_upstream_edit_is_a_conflict() -> None:
    base = doc(SHIPPED_V1)
    ours = doc(SHIPPED_V1)
    del ours["falsepositives"]
    theirs = doc(SHIPPED_V1)
    theirs["falsepositives"] = ["Internal tooling"]
    result = merge3(base, ours, theirs)
    assert "falsepositives" not in result.merged
    (conflict,) = result.conflicts
    assert conflict.path == ("falsepositives",)
    assert conflict.ours is MISSING
    assert conflict.describe()["ours"] is None
    assert conflict.describe()["theirs"] == ["Internal tooling"]


def test_lists_are_atomic_values() -> None:
    base = {"tags": ["a", "b"]}
    result = merge3(base, {"tags": ["a", "b", "c"]}, {"tags": ["b"]})
    assert result.merged == {"tags": ["a", "b", "c"]}
    assert [c.path for c in result.conflicts] == [("tags",)]


def test_type_changes_are_changes() -> None:
    # YAML's 1 and true are different rule values although Python calls them equal.
    result = merge3({"x": 1}, {"x": True}, {"x": 1})
    assert result.merged == {"x": True}
    assert result.conflicts == ()


def test_dates_are_reported_as_text() -> None:
    base = doc(SHIPPED_V1)
    ours, theirs = doc(SHIPPED_V1), doc(SHIPPED_V1)
    ours["date"] = "2020-01-01"
    del theirs["date"]
    (conflict,) = merge3(base, ours, theirs).conflicts
    assert conflict.describe() == {
        "path": "date",
        "base": "2018-05-10",
        "ours": "2020-01-01",
        "theirs": None,
    }


# Properties over random documents: ours and theirs are random edits of base.

KEYS = st.sampled_from(["a", "b", "c", "d", "level", "detection"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["x", "y", "z", ""])
)
VALUES = st.recursive(
    SCALARS | st.lists(SCALARS, max_size=3),
    lambda inner: st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
DOCS = st.dictionaries(KEYS, VALUES, max_size=5)


@st.composite
def edit(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with some keys changed, added, removed or edited inside."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        action = draw(st.sampled_from(["keep", "keep", "drop", "replace", "inner"]))
        if action == "keep":
            out[key] = value
        elif action == "replace":
            out[key] = draw(VALUES)
        elif action == "inner":
            out[key] = draw(edit(value)) if isinstance(value, dict) else value
    for key in draw(st.lists(KEYS, max_size=2)):
        out.setdefault(key, draw(VALUES))
    return out


@st.composite
def triples(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    base = draw(DOCS)
    return base, draw(edit(base)), draw(edit(base))


def flat(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Leaf paths of a document. An empty mapping has none: when both sides add a mapping under
    one key their keys merge, so "emptied" and "added inside" are not leaf-level edits."""
    if isinstance(value, dict):
        out: dict[tuple[str, ...], Any] = {}
        for key, inner in value.items():
            out.update(flat(inner, (*path, key)))
        return out
    return {path: value}


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and repr(a) == repr(b)


def at(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    return flat(document).get(path, MISSING)


@given(DOCS, DOCS)
def test_property_unchanged_ours_takes_theirs(base: dict[str, Any], theirs: dict[str, Any]) -> None:
    result = merge3(base, base, theirs)
    assert result.merged == theirs and result.conflicts == ()


@given(DOCS, DOCS)
def test_property_unchanged_theirs_keeps_ours(base: dict[str, Any], ours: dict[str, Any]) -> None:
    result = merge3(base, ours, base)
    assert result.merged == ours and result.conflicts == ()


@given(DOCS, DOCS)
def test_property_identical_edits_never_conflict(
    base: dict[str, Any], both: dict[str, Any]
) -> None:
    result = merge3(base, both, both)
    assert result.merged == both and result.conflicts == ()


@settings(max_examples=150)
@given(triples())
def test_property_tenant_changes_are_never_lost(
    docs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, ours, theirs = docs
    merged = merge3(base, ours, theirs).merged
    for path in set(flat(ours)) | set(flat(base)):
        if not same(at(ours, path), at(base, path)):
            assert same(at(merged, path), at(ours, path)), path


@settings(max_examples=150)
@given(triples())
def test_property_upstream_changes_are_taken_unless_in_conflict(
    docs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, ours, theirs = docs
    result = merge3(base, ours, theirs)
    conflicted = [c.path for c in result.conflicts]
    for path in set(flat(theirs)) | set(flat(base)):
        if any(path[: len(c)] == c for c in conflicted):
            continue
        if same(at(ours, path), at(base, path)) and not same(at(theirs, path), at(base, path)):
            assert same(at(result.merged, path), at(theirs, path)), path


@settings(max_examples=150)
@given(triples())
def test_property_conflicts_are_real_and_symmetric(
    docs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, ours, theirs = docs
    forward, backward = merge3(base, ours, theirs), merge3(base, theirs, ours)
    assert sorted(c.path for c in forward.conflicts) == sorted(c.path for c in backward.conflicts)
    for c in forward.conflicts:
        assert not same(c.ours, c.theirs)
        assert not same(c.ours, c.base) and not same(c.theirs, c.base)
    if not forward.conflicts:
        assert forward.merged == backward.merged


@settings(max_examples=100)
@given(triples())
def test_property_merging_again_onto_the_same_upstream_changes_nothing(
    docs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    # After a merge the override's new base is upstream's version; with no further upstream
    # change, a second merge is the identity (so a repeated upgrade run is harmless).
    base, ours, theirs = docs
    merged = merge3(base, ours, theirs).merged
    again = merge3(theirs, merged, theirs)
    assert again.merged == merged and again.conflicts == ()
