"""Real SigmaHQ rules on Http records shaped like the demo capture's: attacks fire, benign is silent."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from a2z.records import Http
from a2z.rules import RuleSet, load_directory
from tests.rules.builders import http

CORPUS = Path("/work/shared/corpus/sigma/rules")
SQLMAP_UA = "sqlmap/1.7.2#stable (https://sqlmap.org)"
NIKTO_UA = "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:007335)"
FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@cache
def corpus_rules() -> RuleSet:
    return RuleSet(load_directory(CORPUS / "network", CORPUS / "web").rules)


def titles(record: Http) -> set[str]:
    return {alert.title for alert in corpus_rules().match(record)}


def test_sqlmap_injection_fires_user_agent_and_sqli_rules() -> None:
    record = http(
        uri="/products?id=1%20UNION%20ALL%20SELECT%20NULL%2Cusername%2Cpassword%20FROM%20users--%20-",
        user_agent=SQLMAP_UA,
    )
    assert {
        "Hack Tool User Agent",
        "SQL Injection Strings In URI",
        "Suspicious User-Agents Related To Recon Tools",
    } <= titles(record)


def test_nikto_user_agent_fires_recon_rule() -> None:
    assert "Suspicious User-Agents Related To Recon Tools" in titles(
        http(uri="/wp-login.php", user_agent=NIKTO_UA, status_code=404)
    )


def test_masscan_user_agent_fires_hack_tool_rule() -> None:
    ua = "masscan/1.3 (https://github.com/robertdavidgraham/masscan)"
    assert "Hack Tool User Agent" in titles(http(user_agent=ua))


@pytest.mark.parametrize(
    "uri", ["/../../../etc/passwd", "/cgi-bin/..%252f..%252f..%252fetc%252fpasswd"]
)
def test_path_traversal_fires(uri: str) -> None:
    assert "Path Traversal Exploitation Attempts" in titles(http(uri=uri, status_code=404))


def test_alerts_carry_attack_ids_from_tags() -> None:
    alerts = corpus_rules().match(http(user_agent=SQLMAP_UA))
    by_title = {a.title: a for a in alerts}
    assert by_title["Hack Tool User Agent"].attack == ["T1190", "T1110"]


@pytest.mark.parametrize(
    "record",
    [
        http(),
        http(uri="/robots.txt"),
        http(uri="/products?id=42", referrer="http://www.example.test/"),
        http(uri="/static/app.js?v=3", user_agent="curl/8.5.0"),
        http(uri="/admin", status_code=401),
        http(method="POST", uri="/login", request_body_len=42),
    ],
)
def test_benign_requests_stay_silent(record: Http) -> None:
    assert titles(record) == set()
