"""Feed import from the corpus samples: plain lists, abuse.ch CSV, STIX 2.1 bundles.

The files in tests/data/intel/ come from the shared corpus; see tests/data/README.md.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2z.rules.intel import (
    FEODO,
    RANSOMWARE_TRACKER,
    URLHAUS,
    CsvFormat,
    FeedError,
    IndicatorSet,
    IndicatorType,
    IntelMatcher,
    parse_csv,
    parse_plain,
    parse_stix,
)
from tests.rules.builders import conn, dns, http

DATA = Path(__file__).parents[2] / "data" / "intel"
T = IndicatorType


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def values(result: object) -> list[tuple[str, str]]:
    return [(i.type.value, i.value) for i in result.indicators]  # type: ignore[attr-defined]


def test_plain_list_guesses_types_and_skips_comments() -> None:
    text = (
        "# my list\n192.0.2.1\n\nevil.example  # C2\nhttp://evil.example/x\n"
        + "A" * 64
        + "\nnot a value\n"
    )
    result = parse_plain(text, source="mine", confidence=70)
    assert values(result) == [
        ("ip", "192.0.2.1"),
        ("domain", "evil.example"),
        ("url", "http://evil.example/x"),
        ("sha256", "a" * 64),
    ]
    assert result.rejected == 1 and result.messages[0].startswith("line 7:")
    assert {i.confidence for i in result.indicators} == {70}


def test_plain_list_with_a_declared_type() -> None:
    ja3 = "e7d705a3286e19ea42f587b344ee6865"
    assert values(parse_plain(ja3, source="s", kind=T.JA3)) == [("ja3", ja3)]
    assert values(parse_plain(ja3, source="s")) == [("md5", ja3)]  # the guess cannot know


def test_misp_csv_feed_of_resolvers_loads_but_the_warning_list_keeps_it_silent() -> None:
    result = parse_plain(read("misp-feed.csv"), source="misp")
    assert values(result) == [("ip", "1.1.1.1"), ("ip", "1.0.0.1")]
    m = IntelMatcher([IndicatorSet(result.indicators)])
    assert m.match(conn(resp_h="1.1.1.1")) == []
    assert m.stats.suppressed == 1


def test_abusech_feodo_csv() -> None:
    result = parse_csv(read("feodoips.txt"), FEODO, source="abuse.ch feodo", confidence=90)
    assert values(result) == [("ip", "110.93.230.101")]
    [alert] = IntelMatcher([IndicatorSet(result.indicators)]).match(conn(resp_h="110.93.230.101"))
    assert "abuse.ch feodo" in alert.title


def test_abusech_urlhaus_csv() -> None:
    result = parse_csv(read("urlhaus.txt"), URLHAUS, source="urlhaus")
    assert values(result) == [
        ("url", "http://marconuenlist.ch/verif.accounts.docs.net/"),
        ("url", "http://cbd-planet.ch/sec.myacc.send.com/"),
    ]
    m = IntelMatcher([IndicatorSet(result.indicators)])
    assert len(m.match(http(host="cbd-planet.ch", uri="/sec.myacc.send.com/"))) == 1


def test_abusech_ransomware_tracker_csv_with_several_ips_per_cell() -> None:
    result = parse_csv(read("ransomwaretracker.csv"), RANSOMWARE_TRACKER, source="rwt")
    assert Counter(kind for kind, _ in values(result)) == {"domain": 3, "url": 3, "ip": 4}
    assert ("ip", "67.171.65.64") in values(result)
    assert result.rejected == 1  # "213.176.241.230|,67.171.65.64": the cell's ",67…" part
    assert "line 12" in result.messages[0]
    indicators = IndicatorSet(result.indicators)
    assert len(indicators) == 7  # the third row repeats the first
    assert len(IntelMatcher([indicators]).match(dns(query="ojmekzw4mujvqeju.minitili.at"))) == 1


def test_csv_with_a_plain_header_row() -> None:
    text = "indicator,kind\n192.0.2.1,c2\nbogus,c2\n"
    result = parse_csv(text, CsvFormat({"indicator": T.IP}), source="s")
    assert values(result) == [("ip", "192.0.2.1")] and result.rejected == 1


def test_csv_without_the_named_column_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="lacks the columns"):
        parse_csv(read("feodoips.txt"), URLHAUS, source="s")


def test_stix_apt1_cidrs_domains_and_md5_with_and_patterns_unsupported() -> None:
    result = parse_stix(read("apt1.json"), source="apt1")
    kinds = Counter(kind for kind, _ in values(result))
    assert kinds == {"ip": 4, "domain": 3, "md5": 3}
    assert ("ip", "58.246.0.0/15") in values(result)
    assert result.unsupported == {"pattern with AndBoolean": 2}  # the x509 issuer AND serial
    assert {i.ref for i in result.indicators} <= {
        o["id"] for o in json.loads(read("apt1.json"))["objects"] if o["type"] == "indicator"
    }
    m = IntelMatcher([IndicatorSet(result.indicators)])
    assert len(m.match(conn(resp_h="58.247.1.2"))) == 1  # inside 58.246.0.0/15


def test_stix_poisonivy_ored_comparisons_and_a_bad_value() -> None:
    result = parse_stix(read("poisonivy.json"), source="poisonivy")
    kinds = Counter(kind for kind, _ in values(result))
    assert kinds == {"ip": 40, "domain": 24}
    assert result.rejected == 1 and "domain autuo.xicp.net" in result.messages[0]
    assert result.unsupported == {"object path file:name": 2}
    m = IntelMatcher([IndicatorSet(result.indicators)])
    assert len(m.match(dns(query="nkr.iphone.qpoe.com"))) == 1


def test_stix_url_and_sha256_examples() -> None:
    url = parse_stix(read("indicator-for-malicious-url.json"), source="s")
    assert values(url) == [("url", "http://x4z9arb.cn/4712/")]
    sha = parse_stix(read("malware-indicator-for-file-hash.json"), source="s")
    assert values(sha) == [
        ("sha256", "ef537f25c895bfa782526529a9b63d97aa631564d5d789c2b765448c8635fb6c")
    ]


def test_stix_misp_export_keeps_the_simple_pattern_only() -> None:
    result = parse_stix(read("test_attributes_collection_stix21.json"), source="misp")
    assert values(result) == [("domain", "circl.lu")]
    assert result.unsupported == {"pattern with AndBoolean": 1, "object path file:name": 1}


def test_stix_private_address_indicator_is_warning_listed() -> None:
    result = parse_stix(read("indicator-for-c2-ip-address.json"), source="s")
    assert values(result) == [("ip", "10.0.0.0")]
    m = IntelMatcher([IndicatorSet(result.indicators)])
    assert m.match(conn(resp_h="10.0.0.0")) == [] and m.stats.suppressed == 1


def stix_indicator(pattern: str, **extra: object) -> str:
    obj = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "created": "2024-01-01T00:00:00.000Z",
        "modified": "2024-01-01T00:00:00.000Z",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2024-01-01T00:00:00Z",
        **extra,
    }
    return json.dumps(
        {"type": "bundle", "id": "bundle--1a2b3c4d-0000-4000-8000-000000000000", "objects": [obj]}
    )


def test_stix_confidence_expiry_and_revocation() -> None:
    [ind] = parse_stix(
        stix_indicator(
            "[ipv6-addr:value = '2001:db8::1']", confidence=85, valid_until="2030-01-01T00:00:00Z"
        ),
        source="s",
        confidence=10,
    ).indicators
    assert (ind.value, ind.confidence, ind.expires) == ("2001:db8::1", 85, 1893456000.0)
    gone = parse_stix(
        stix_indicator("[ipv4-addr:value = '192.0.2.1']", valid_until="2024-06-01T00:00:00Z"),
        source="s",
        now=1800000000.0,
    )
    assert gone.indicators == [] and gone.skipped == 1
    revoked = parse_stix(
        stix_indicator("[ipv4-addr:value = '192.0.2.1']", revoked=True), source="s"
    )
    assert revoked.indicators == [] and revoked.skipped == 1


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[ipv4-addr:value != '192.0.2.1']", "pattern with a negated comparison"),
        ("[url:value MATCHES '^http']", "pattern with MatchesComparison"),
        ("[ipv4-addr:value = '192.0.2.1'] REPEATS 5 TIMES", "pattern with QualifiedObservation"),
        (
            "[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [url:value = 'http://a/']",
            "pattern with FollowedByObservation",
        ),
        ("[network-traffic:dst_port = 443]", "object path network-traffic:dst_port"),
    ],
)
def test_unsupported_stix_patterns_are_counted_with_their_reason(pattern: str, reason: str) -> None:
    result = parse_stix(stix_indicator(pattern), source="s")
    assert result.indicators == [] and result.unsupported == {reason: 1}


def test_stix_pattern_types_other_than_stix_are_unsupported() -> None:
    result = parse_stix(
        stix_indicator("alert tcp any any -> any any (sid:1;)", pattern_type="snort"), source="s"
    )
    assert result.unsupported == {"pattern_type snort": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "not JSON"), ("[]", "not a STIX bundle"), ('{"type": "bundle"}', "objects")],
)
def test_unreadable_stix_is_a_feed_error(text: str, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse_stix(text, source="s")


def test_invalid_stix_indicator_objects_are_rejected_not_fatal() -> None:
    bundle = json.loads(stix_indicator("[ipv4-addr:value = '192.0.2.1']"))
    bundle["objects"].append({"type": "indicator", "id": "indicator--bad"})
    bundle["objects"].append(
        {"type": "indicator", "spec_version": "2.1", "id": "x", "pattern": "[["}
    )
    result = parse_stix(json.dumps(bundle), source="s")
    assert values(result) == [("ip", "192.0.2.1")] and result.rejected == 2


# --- fuzz: feeds never fail with anything but FeedError -------------------------------------


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text_feeds_raise_only_feed_error(text: str) -> None:
    parse_plain(text, source="s")
    for fmt in (FEODO, RANSOMWARE_TRACKER):
        with contextlib.suppress(FeedError):
            parse_csv(text, fmt, source="s")
    with contextlib.suppress(FeedError):
        parse_stix(text, source="s")


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
patterns = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda path, op, v: f"[{path} {op} '{v}']",
        st.sampled_from(
            ["ipv4-addr:value", "domain-name:value", "url:value", "file:hashes.MD5", "x:y"]
        ),
        st.sampled_from(["=", "!=", "LIKE", "IN"]),
        st.text(alphabet="abc.0123456789:/", max_size=20),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    pattern=patterns,
    extra=st.dictionaries(
        st.sampled_from(
            ["confidence", "valid_until", "revoked", "pattern_type", "spec_version", "created"]
        ),
        json_leaf,
    ),
)
def test_random_stix_indicators_are_taken_or_counted(
    pattern: str, extra: dict[str, object]
) -> None:
    result = parse_stix(stix_indicator(pattern, **extra), source="s")
    outcomes = (
        len(result.indicators) + result.rejected + sum(result.unsupported.values()) + result.skipped
    )
    assert outcomes >= 1
