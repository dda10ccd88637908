"""Indicator sets and the matcher: every field type, subdomains, blocks, expiry, warning list."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from a2z.records import Severity, Ssl
from a2z.rules.intel import (
    IndicatorSet,
    IndicatorType,
    IntelMatcher,
    WarningList,
    make,
)
from tests.rules.builders import conn, dns, http

T = IndicatorType
NOW = 1_800_000_000.0


def ind(kind: IndicatorType, value: str, source: str = "feed", **kw: object) -> object:
    return make(kind, value, source=source, **kw)  # type: ignore[arg-type]


def matcher(*indicators: object, warnings: WarningList | None = None) -> IntelMatcher:
    return IntelMatcher([IndicatorSet(indicators)], warnings)  # type: ignore[arg-type]


def ssl(**fields: object) -> Ssl:
    base: dict[str, object] = {
        "ts": NOW,
        "uid": "Cssl",
        "orig_h": "10.66.0.10",
        "orig_p": 50000,
        "resp_h": "203.0.113.50",
        "resp_p": 443,
    }
    return Ssl(**{**base, **fields})  # type: ignore[arg-type]


def test_conn_to_an_indicator_address_raises_an_alert_naming_field_and_source() -> None:
    m = matcher(ind(T.IP, "203.0.113.50", source="abuse.ch feodo", confidence=90))
    record = conn(ts=NOW, resp_h="203.0.113.50", uid="C1")
    [hit] = m.hits(record)
    assert (hit.field, hit.observed, hit.indicator.source) == (
        "id.resp_h",
        "203.0.113.50",
        "abuse.ch feodo",
    )
    [alert] = m.match(record)
    assert alert.rule_id == "a2z-intel-ip"
    assert alert.severity is Severity.HIGH
    assert alert.uids == ["C1"]
    assert "id.resp_h 203.0.113.50" in alert.title and "abuse.ch feodo" in alert.title
    assert alert.dedup_key == "intel|ip|203.0.113.50|abuse.ch feodo|10.66.0.10"
    assert m.match(conn(ts=NOW, resp_h="203.0.113.51")) == []


def test_cidr_blocks_match_addresses_inside_them_v4_and_v6() -> None:
    m = matcher(ind(T.IP, "58.246.0.0/15"), ind(T.IP, "2001:db8:bad::/48"))
    assert len(m.match(conn(ts=NOW, orig_h="58.247.255.1"))) == 1
    assert m.match(conn(ts=NOW, orig_h="58.248.0.1")) == []
    assert len(m.match(conn(ts=NOW, resp_h="2001:db8:bad:1::9"))) == 1
    assert m.match(conn(ts=NOW, resp_h="2001:db8:bae::1")) == []


def test_nested_blocks_report_each_and_an_expired_inner_block_leaves_the_outer() -> None:
    inner = ind(T.IP, "198.51.100.0/24", source="a", expires=NOW - 1)
    outer = ind(T.IP, "198.51.0.0/16", source="b")
    m = matcher(inner, outer)
    [hit] = m.hits(conn(ts=NOW, resp_h="198.51.100.7"))
    assert hit.indicator.source == "b"
    assert m.stats.expired == 1
    fresh = matcher(ind(T.IP, "198.51.100.0/24", source="a"), outer)
    assert [h.indicator.source for h in fresh.hits(conn(ts=NOW, resp_h="198.51.100.7"))] == [
        "a",
        "b",
    ]


def test_domains_match_themselves_and_subdomains_only() -> None:
    m = matcher(ind(T.DOMAIN, "evil.example"))
    assert [h.field for h in m.hits(dns(ts=NOW, query="a.b.EVIL.example."))] == ["query"]
    assert m.hits(dns(ts=NOW, query="notevil.example")) == []
    assert m.hits(dns(ts=NOW, query="example")) == []


def test_dns_answers_match_as_addresses_or_names() -> None:
    m = matcher(ind(T.IP, "192.0.2.66"), ind(T.DOMAIN, "cdn.evil.example"))
    record = dns(ts=NOW, query="www.fine.example", answers=["x.cdn.evil.example", "192.0.2.66"])
    assert sorted((h.field, h.observed) for h in m.hits(record)) == [
        ("answers", "192.0.2.66"),
        ("answers", "x.cdn.evil.example"),
    ]


def test_http_host_and_normalised_url() -> None:
    m = matcher(ind(T.URL, "http://motefugue.com/645d5"), ind(T.DOMAIN, "minitili.at"))
    record = http(ts=NOW, host="MOTEFUGUE.com:80", uri="/645d5")
    assert [(h.field, h.observed) for h in m.hits(record)] == [
        ("url", "http://motefugue.com/645d5")
    ]
    assert m.hits(http(ts=NOW, host="motefugue.com", uri="/645d5?x=1")) == []
    proxied = http(ts=NOW, host="proxy.local", uri="http://motefugue.com/645d5")
    assert [h.field for h in m.hits(proxied)] == ["url"]
    assert [h.field for h in m.hits(http(ts=NOW, host="ojmekzw4mujvqeju.minitili.at"))] == ["host"]


def test_tls_server_name_ja3_and_ja4() -> None:
    ja3 = "e7d705a3286e19ea42f587b344ee6865"
    ja4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"
    m = matcher(ind(T.DOMAIN, "c2.example"), ind(T.JA3, ja3), ind(T.JA4, ja4))
    record = ssl(server_name="api.c2.example", ja3=ja3.upper(), ja4=ja4)
    assert sorted(h.field for h in m.hits(record)) == ["ja3", "ja4", "server_name"]


def test_expired_indicators_do_not_match_and_are_counted() -> None:
    m = matcher(ind(T.IP, "192.0.2.9", expires=NOW))
    assert m.match(conn(ts=NOW - 1, resp_h="192.0.2.9")) != []  # judged at the record's time
    assert m.match(conn(ts=NOW, resp_h="192.0.2.9")) == []
    assert m.match(conn(ts=NOW - 5, resp_h="192.0.2.9"), now=NOW + 5) == []
    assert m.stats.expired == 2


def test_warning_list_suppresses_benign_indicators() -> None:
    m = matcher(
        ind(T.IP, "8.8.8.8"),  # a public resolver in a feed
        ind(T.IP, "10.0.0.0/8"),  # a private block
        ind(T.DOMAIN, "www.google.com"),
        ind(T.URL, "https://github.com/some/repo"),
        ind(T.IP, "203.0.113.5"),
    )
    assert m.match(conn(ts=NOW, resp_h="8.8.8.8")) == []
    assert m.match(conn(ts=NOW, resp_h="10.3.3.3")) == []
    assert m.match(dns(ts=NOW, query="www.google.com")) == []
    assert m.match(http(ts=NOW, host="github.com", uri="/some/repo")) == []
    assert len(m.match(conn(ts=NOW, resp_h="203.0.113.5"))) == 1
    assert m.stats.suppressed >= 4
    custom = matcher(ind(T.IP, "203.0.113.5"), warnings=WarningList(cidrs=["203.0.113.0/24"]))
    assert custom.match(conn(ts=NOW, resp_h="203.0.113.5")) == []
    off = matcher(ind(T.IP, "8.8.8.8"), warnings=WarningList())
    assert len(off.match(conn(ts=NOW, resp_h="8.8.8.8"))) == 1


def test_global_and_tenant_sets_combine_and_tenants_stay_apart() -> None:
    shared = IndicatorSet([make(T.IP, "192.0.2.1", source="global")])
    tenant_a = IndicatorSet([make(T.IP, "192.0.2.2", source="tenant a")])
    tenant_b = IndicatorSet()
    a, b = IntelMatcher([shared, tenant_a]), IntelMatcher([shared, tenant_b])
    assert (
        len(a.match(conn(ts=NOW, resp_h="192.0.2.1")))
        == len(b.match(conn(ts=NOW, resp_h="192.0.2.1")))
        == 1
    )
    assert len(a.match(conn(ts=NOW, resp_h="192.0.2.2"))) == 1
    assert b.match(conn(ts=NOW, resp_h="192.0.2.2")) == []
    tenant_b.add(make(T.IP, "192.0.2.2", source="tenant b"))  # sets are read live
    assert len(b.match(conn(ts=NOW, resp_h="192.0.2.2"))) == 1


def test_set_add_remove_same_value_from_two_sources() -> None:
    s = IndicatorSet()
    assert s.add(make(T.DOMAIN, "evil.example", source="a"))
    assert s.add(make(T.DOMAIN, "evil.example", source="b"))
    assert not s.add(make(T.DOMAIN, "evil.example", source="b", confidence=99))  # replaced
    assert len(s) == 2
    assert [i.confidence for i in s] == [50, 99]
    assert s.remove(T.DOMAIN, "evil.example", "a")
    assert not s.remove(T.DOMAIN, "evil.example", "a")
    assert [i.source for i in s] == ["b"]
    s.add(make(T.IP, "10.0.0.0/8", source="a", expires=NOW))
    assert s.purge(NOW) == 1 and len(s) == 1


def test_addresses_that_are_not_addresses_do_not_match_or_crash() -> None:
    m = matcher(ind(T.IP, "0.0.0.0/0"))
    for bad in ("", "nonsense", "1.2.3", "::zz"):
        m.hits(conn(ts=NOW, resp_h=bad, orig_h=bad))


# --- property: the set agrees with a linear scan ----------------------------------------------

v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
blocks = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda t: str(ipaddress.ip_network((t[0], t[1]), strict=False))
)
labels = st.sampled_from(["a", "b", "evil", "example", "com", "x-1"])
names = st.lists(labels, min_size=1, max_size=4).map(".".join)


@settings(max_examples=200, deadline=None)
@given(
    cidrs=st.lists(blocks, max_size=20),
    domains=st.lists(names, max_size=20),
    probes=st.lists(st.tuples(v4, names), min_size=1, max_size=20),
)
def test_lookups_agree_with_a_linear_scan(
    cidrs: list[str], domains: list[str], probes: list[tuple[str, str]]
) -> None:
    s = IndicatorSet(
        [make(T.IP, c, source="s") for c in cidrs]
        + [make(T.DOMAIN, d, source="s") for d in domains]
    )
    nets = {ipaddress.ip_network(c) for c in cidrs}
    for address, name in probes:
        got_ip = {i.value for entries in s.covering_ip(address) for i in entries}
        want_ip = {
            make(T.IP, str(n), source="s").value for n in nets if ipaddress.ip_address(address) in n
        }
        assert got_ip == want_ip
        got_dns = {i.value for entries in s.lookup_domain(name) for i in entries}
        assert got_dns == {d for d in domains if name == d or name.endswith("." + d)}


@settings(max_examples=300, deadline=None)
@given(
    host=st.from_regex(r"[A-Za-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
    uri=st.from_regex(r"/[ -~]{0,30}", fullmatch=True),
)
def test_record_url_fast_path_equals_normalise_url(host: str, uri: str) -> None:
    """Where a URL indicator could match (its value normalises), both ways agree."""
    from a2z.rules.intel.indicators import InvalidIndicator, normalise_url
    from a2z.rules.intel.matcher import _record_url

    try:
        want = normalise_url(f"http://{host}{uri}")
    except InvalidIndicator:
        return
    assert _record_url(http(host=host, uri=uri)) == want
