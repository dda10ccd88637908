"""Each Sigma value modifier, wildcards, null, lists and maps, on hand-made records."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from a2z.records import Http
from a2z.rules import UnsupportedRuleError, compile_yaml
from tests.rules.builders import conn, dns, http, rule, rule_yaml


def matches(detection_item: dict[str, Any], record: Http) -> bool:
    compiled = rule({"selection": detection_item, "condition": "selection"})
    return compiled.predicate(record)


@pytest.mark.parametrize(
    ("item", "uri", "expected"),
    [
        ({"uri": "/index.html"}, "/index.html", True),
        ({"uri": "/index.html"}, "/INDEX.HTML", True),  # plain strings ignore case
        ({"uri": "/index.html"}, "/index.html?x=1", False),
        ({"uri|contains": "etc/passwd"}, "/a/../../etc/passwd", True),
        ({"uri|contains": "etc/passwd"}, "/etc/shadow", False),
        ({"uri|startswith": "/admin"}, "/admin/login", True),
        ({"uri|startswith": "/admin"}, "/x/admin", False),
        ({"uri|endswith": ".php"}, "/wp-login.PHP", True),
        ({"uri|endswith": ".php"}, "/wp-login.php5", False),
        ({"uri|contains|all": ["union", "select"]}, "/p?id=1 UNION SELECT 2", True),
        ({"uri|contains|all": ["union", "select"]}, "/p?id=1 union 2", False),
        ({"uri|contains": ["union", "sleep("]}, "/p?id=sleep(5)", True),  # list = OR
        ({"uri": "/a*b?d"}, "/a-x-bcd", True),  # * any run, ? one character
        ({"uri": "/a*b?d"}, "/a-x-bd", False),
        ({"uri": "/a\\*b"}, "/a*b", True),  # escaped wildcard is literal
        ({"uri": "/a\\*b"}, "/axb", False),
        ({"uri|cased": "/Admin"}, "/Admin", True),
        ({"uri|cased": "/Admin"}, "/admin", False),
        ({"uri|contains|cased": "Select"}, "/?q=select", False),
        ({"uri|re": "^/admin/[0-9]+$"}, "/admin/42", True),
        ({"uri|re": "^/admin/[0-9]+$"}, "/ADMIN/42", False),  # re is case-sensitive
        ({"uri|re|i": "^/admin/[0-9]+$"}, "/ADMIN/42", True),
        ({"uri|re": "^b$"}, "a\nb", False),
        ({"uri|re|m": "^b$"}, "a\nb", True),
        ({"uri|re": "a.b"}, "a\nb", False),
        ({"uri|re|s": "a.b"}, "a\nb", True),
        ({"uri|base64": "/etc/passwd"}, base64.b64encode(b"/etc/passwd").decode(), True),
        ({"uri|base64|contains": "passwd"}, "/?q=" + base64.b64encode(b"passwd").decode(), True),
        ({"uri|base64|contains": "passwd"}, "/?q=passwd", False),
    ],
)
def test_string_modifiers_match_uri(item: dict[str, Any], uri: str, expected: bool) -> None:
    assert matches(item, http(uri=uri)) is expected


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy"])
def test_base64offset_matches_value_at_any_offset(prefix: bytes) -> None:
    encoded = base64.b64encode(prefix + b"/bin/bash -i" + b"tail").decode()
    assert matches({"uri|base64offset|contains": "/bin/bash -i"}, http(uri="/?c=" + encoded))
    assert not matches({"uri|base64offset|contains": "/bin/sh"}, http(uri="/?c=" + encoded))


@pytest.mark.parametrize(
    ("modifier", "encoding"),
    [
        ("wide", "utf-16-le"),
        ("utf16le", "utf-16-le"),
        ("utf16be", "utf-16-be"),
        ("utf16", "utf-16"),
    ],
)
def test_utf16_modifiers_encode_before_base64(modifier: str, encoding: str) -> None:
    encoded = base64.b64encode("Invoke".encode(encoding)).decode()
    assert matches({f"uri|{modifier}|base64": "Invoke"}, http(uri=encoded))
    assert not matches({f"uri|{modifier}|base64": "Invoke"}, http(uri="Invoke"))


def test_wide_alone_matches_utf16le_text() -> None:
    assert matches({"user_agent|wide|contains": "ab"}, http(user_agent="xa\x00b\x00y"))
    assert not matches({"user_agent|wide|contains": "ab"}, http(user_agent="xaby"))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("cmd -exec", True), ("cmd /exec", True), ("cmd \u2013exec", True), ("cmd exec", False)],
)
def test_windash_accepts_every_dash_form(uri: str, expected: bool) -> None:
    assert matches({"uri|windash|contains": " -exec"}, http(uri=uri)) is expected


@pytest.mark.parametrize(
    ("item", "status", "expected"),
    [
        ({"status_code": 404}, 404, True),
        ({"status_code": 404}, 200, False),
        ({"status_code": "404"}, 404, True),  # a quoted number still compares to an int field
        ({"status_code|gt": 499}, 500, True),
        ({"status_code|gt": 500}, 500, False),
        ({"status_code|gte": 500}, 500, True),
        ({"status_code|lt": 300}, 200, True),
        ({"status_code|lt": 200}, 200, False),
        ({"status_code|lte": 200}, 200, True),
        ({"status_code|gte": 500}, None, False),
    ],
)
def test_numeric_values_and_comparisons(
    item: dict[str, Any], status: int | None, expected: bool
) -> None:
    assert matches(item, http(status_code=status)) is expected


def test_exists_true_and_false() -> None:
    assert matches({"username|exists": True}, http(username="admin"))
    assert not matches({"username|exists": True}, http())
    assert matches({"username|exists": False}, http())
    assert not matches({"username|exists": False}, http(username="admin"))


def test_null_matches_absent_or_empty_field() -> None:
    assert matches({"referrer": None}, http())
    assert matches({"user_agent": None}, http(user_agent=""))
    assert not matches({"referrer": None}, http(referrer="http://a.test/"))


def test_empty_string_is_not_null() -> None:
    assert matches({"user_agent": ""}, http(user_agent=""))
    assert not matches({"user_agent": ""}, http(user_agent=None))


def test_map_is_and_across_fields() -> None:
    item = {"method": "PUT", "uri|endswith": ".jsp"}
    assert matches(item, http(method="PUT", uri="/shell.jsp"))
    assert not matches(item, http(method="GET", uri="/shell.jsp"))
    assert not matches(item, http(method="PUT", uri="/shell.txt"))


def test_list_of_maps_is_or() -> None:
    detection = {
        "selection": [{"method": "PUT"}, {"uri|contains": "/cgi-bin/"}],
        "condition": "selection",
    }
    compiled = rule(detection)
    assert compiled.predicate(http(method="PUT"))
    assert compiled.predicate(http(uri="/cgi-bin/test.sh"))
    assert not compiled.predicate(http())


def test_cidr_on_addresses_v4_and_v6() -> None:
    assert matches({"id.orig_h|cidr": "10.66.0.0/24"}, http())
    assert not matches({"id.orig_h|cidr": "192.168.0.0/16"}, http())
    assert matches({"id.orig_h|cidr": ["192.168.0.0/16", "10.0.0.0/8"]}, http())
    assert matches({"id.orig_h|cidr": "fd00::/8"}, http(orig_h="fd00::1"))
    assert not matches({"id.orig_h|cidr": "fd00::/8"}, http())


def test_fieldref_compares_two_fields() -> None:
    compiled = rule(
        {"selection": {"id.orig_p|fieldref": "id.resp_p"}, "condition": "selection"},
        {"product": "zeek", "service": "conn"},
    )
    assert compiled.predicate(conn(orig_p=80, resp_p=80))
    assert not compiled.predicate(conn(orig_p=51000, resp_p=80))


def test_fieldref_with_startswith_endswith_contains() -> None:
    rec = http(host="evil.test", uri="/evil.test/x")
    assert matches({"uri|fieldref|contains": "host"}, rec)
    assert not matches({"uri|fieldref|startswith": "host"}, rec)
    assert matches({"uri|fieldref|endswith": "host"}, http(host="x", uri="/a/x"))


def test_bool_field_and_list_field() -> None:
    zeek_dns = {"product": "zeek", "service": "dns"}
    rejected = rule({"selection": {"rejected": True}, "condition": "selection"}, zeek_dns)
    assert rejected.predicate(dns(rejected=True))
    assert not rejected.predicate(dns())
    answer = rule({"selection": {"answers|endswith": ".20"}, "condition": "selection"}, zeek_dns)
    assert answer.predicate(dns(answers=["10.66.0.1", "10.66.0.20"]))
    assert not answer.predicate(dns(answers=[]))


def test_keywords_search_every_field() -> None:
    compiled = rule(
        {"keywords": ["sqlmap", "nikto"], "condition": "keywords"}, {"category": "webserver"}
    )
    assert compiled.predicate(http(user_agent="sqlmap/1.7.2#stable"))
    assert compiled.predicate(http(uri="/nikto-test"))
    assert not compiled.predicate(http())


def test_cased_keyword_stays_case_sensitive() -> None:
    compiled = rule(
        {"keywords": {"|cased": "SqlMap"}, "condition": "keywords"}, {"category": "webserver"}
    )
    assert compiled.predicate(http(user_agent="x SqlMap y"))
    assert not compiled.predicate(http(user_agent="x sqlmap y"))


def test_timestamp_part_modifier_is_unsupported() -> None:
    with pytest.raises(UnsupportedRuleError) as info:
        compile_yaml(rule_yaml({"selection": {"ts|hour": 3}, "condition": "selection"}))
    assert info.value.feature == "timestamp part modifier (hour)"


def test_expand_placeholder_is_unsupported() -> None:
    with pytest.raises(UnsupportedRuleError) as info:
        compile_yaml(
            rule_yaml({"selection": {"uri|expand": "%admin_paths%"}, "condition": "selection"})
        )
    assert "expand placeholder %admin_paths%" in info.value.feature
