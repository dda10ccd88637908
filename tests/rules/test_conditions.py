"""Sigma condition syntax: and/or/not, parentheses, `1 of`/`all of` with wildcards and `them`."""

from __future__ import annotations

from typing import Any

import pytest

from a2z.rules import RuleSyntaxError, compile_yaml
from tests.rules.builders import http, rule, rule_yaml

SELECTIONS: dict[str, Any] = {
    "sel_put": {"method": "PUT"},
    "sel_jsp": {"uri|endswith": ".jsp"},
    "filter_local": {"id.orig_h|cidr": "127.0.0.0/8"},
}
PUT_JSP = http(method="PUT", uri="/shell.jsp")
PUT_TXT = http(method="PUT", uri="/notes.txt")
GET_JSP = http(method="GET", uri="/index.jsp")
GET_TXT = http(method="GET", uri="/notes.txt")
PUT_JSP_LOCAL = http(method="PUT", uri="/shell.jsp", orig_h="127.0.0.1")


@pytest.mark.parametrize(
    ("condition", "matching"),
    [
        ("sel_put", {"PUT_JSP", "PUT_TXT", "PUT_JSP_LOCAL"}),
        ("sel_put and sel_jsp", {"PUT_JSP", "PUT_JSP_LOCAL"}),
        ("sel_put or sel_jsp", {"PUT_JSP", "PUT_TXT", "GET_JSP", "PUT_JSP_LOCAL"}),
        ("not sel_put", {"GET_JSP", "GET_TXT"}),
        ("sel_put and not sel_jsp", {"PUT_TXT"}),
        ("sel_put and sel_jsp and not filter_local", {"PUT_JSP"}),
        ("not (sel_put or sel_jsp)", {"GET_TXT"}),
        ("(sel_put or sel_jsp) and not filter_local", {"PUT_JSP", "PUT_TXT", "GET_JSP"}),
        ("sel_put or sel_jsp and filter_local", {"PUT_JSP", "PUT_TXT", "PUT_JSP_LOCAL"}),
        ("1 of sel_*", {"PUT_JSP", "PUT_TXT", "GET_JSP", "PUT_JSP_LOCAL"}),
        ("any of sel_*", {"PUT_JSP", "PUT_TXT", "GET_JSP", "PUT_JSP_LOCAL"}),
        ("all of sel_*", {"PUT_JSP", "PUT_JSP_LOCAL"}),
        ("all of sel_* and not 1 of filter_*", {"PUT_JSP"}),
        ("1 of them", {"PUT_JSP", "PUT_TXT", "GET_JSP", "PUT_JSP_LOCAL"}),
        ("all of them", {"PUT_JSP_LOCAL"}),
        ("not all of them", {"PUT_JSP", "PUT_TXT", "GET_JSP", "GET_TXT"}),
    ],
)
def test_condition_selects_expected_records(condition: str, matching: set[str]) -> None:
    compiled = rule({**SELECTIONS, "condition": condition})
    records = {
        "PUT_JSP": PUT_JSP,
        "PUT_TXT": PUT_TXT,
        "GET_JSP": GET_JSP,
        "GET_TXT": GET_TXT,
        "PUT_JSP_LOCAL": PUT_JSP_LOCAL,
    }
    assert {name for name, rec in records.items() if compiled.predicate(rec)} == matching


@pytest.mark.parametrize(
    "condition",
    ["sel_put and", "missing", "1 of nothing_*", "sel_put | count() > 5", "(sel_put"],
)
def test_bad_condition_raises_rule_syntax_error(condition: str) -> None:
    with pytest.raises(RuleSyntaxError):
        compile_yaml(rule_yaml({**SELECTIONS, "condition": condition}))
