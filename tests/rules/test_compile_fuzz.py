"""Random well-formed detection maps compile or raise RuleError, and never crash at match time."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2z.rules import RuleError, compile_yaml
from tests.rules.builders import http, rule_yaml

FIELDS = ["uri", "user_agent", "method", "status_code", "host", "id.orig_h", "c-uri", "nosuch"]
MODIFIERS = [
    "contains", "startswith", "endswith", "all", "re", "i", "m", "s", "cidr", "base64",
    "base64offset", "utf16", "utf16le", "utf16be", "wide", "windash", "exists", "gt", "gte",
    "lt", "lte", "fieldref", "cased", "expand", "neq", "minute", "bogus",
]  # fmt: skip
scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["*", "?", "a*b", "\\*", "10.0.0.0/8", "[", "(a|b)", "%x%", "uri", "::1/128"]),
    st.integers(-5, 70000),
    st.booleans(),
    st.none(),
)
values = st.one_of(scalars, st.lists(scalars, min_size=0, max_size=3))
keys = st.builds(
    lambda f, mods: "|".join([f, *mods]),
    st.sampled_from(FIELDS),
    st.lists(st.sampled_from(MODIFIERS), max_size=3),
)
selections = st.one_of(
    st.dictionaries(keys, values, min_size=1, max_size=3),
    st.lists(st.dictionaries(keys, values, min_size=1, max_size=2), min_size=1, max_size=2),
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3),
)
NAMES = ["sel_a", "sel_b", "filter_c"]
atoms = st.sampled_from([*NAMES, "1 of sel_*", "all of sel_*", "1 of them", "all of them"])
conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} and {b}", inner, inner),
        st.builds(lambda a, b: f"{a} or {b}", inner, inner),
        st.builds(lambda a: f"not {a}", inner),
        st.builds(lambda a: f"({a})", inner),
    ),
    max_leaves=5,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    detections=st.fixed_dictionaries({name: selections for name in NAMES}),
    condition=conditions,
    logsource=st.sampled_from(
        [{"category": "proxy"}, {"category": "webserver"}, {"product": "zeek", "service": "http"}]
    ),
)
def test_random_detection_compiles_or_raises_rule_error(
    detections: dict[str, Any], condition: str, logsource: dict[str, str]
) -> None:
    try:
        compiled = compile_yaml(rule_yaml({**detections, "condition": condition}, logsource))
    except RuleError:
        return
    for record in (http(), http(uri="/a*b?x=10.0.0.1", user_agent="", status_code=None)):
        assert compiled.predicate(record) in (True, False)
