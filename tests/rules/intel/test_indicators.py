"""Indicator values: one normal form per type, invalid values rejected with a typed error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a2z.rules.intel import IndicatorType, InvalidIndicator, guess_type, make, normalise

T = IndicatorType


@pytest.mark.parametrize(
    ("kind", "raw", "normal"),
    [
        (T.IP, " 192.0.2.7 ", "192.0.2.7"),
        (T.IP, "10.1.2.3/8", "10.0.0.0/8"),  # host bits cleared
        (T.IP, "203.0.113.9/32", "203.0.113.9"),  # a /32 is an address
        (T.IP, "2001:DB8:0:0::1", "2001:db8::1"),
        (T.IP, "2001:db8::/32", "2001:db8::/32"),
        (T.DOMAIN, "WWW.Evil.Example.", "www.evil.example"),
        (T.DOMAIN, "bücher.example", "xn--bcher-kva.example"),
        (T.DOMAIN, "_dmarc.example.com", "_dmarc.example.com"),
        (T.URL, "HTTP://Evil.Example:80/a/b?x=1#frag", "http://evil.example/a/b?x=1"),
        (T.URL, "https://user:pw@evil.example:8443", "https://evil.example:8443/"),
        (T.URL, "evil.example/payload.exe", "http://evil.example/payload.exe"),
        (T.URL, "http://[2001:DB8::1]/x", "http://[2001:db8::1]/x"),
        (T.MD5, "001DD76872D80801692FF942308C64E6", "001dd76872d80801692ff942308c64e6"),
        (T.SHA1, "a" * 40, "a" * 40),
        (T.SHA256, "EF" * 32, "ef" * 32),
        (T.JA3, "E7D705A3286E19EA42F587B344EE6865", "e7d705a3286e19ea42f587b344ee6865"),
        (T.JA4, "t13d1516h2_8daaf6152771_e5627efa2ab1", "t13d1516h2_8daaf6152771_e5627efa2ab1"),
    ],
)
def test_values_take_one_normal_form(kind: IndicatorType, raw: str, normal: str) -> None:
    assert normalise(kind, raw) == normal


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (T.IP, "10.0.0.256"),
        (T.IP, "evil.example"),
        (T.DOMAIN, "domain autuo.xicp.net"),  # from the poisonivy STIX bundle
        (T.DOMAIN, "a..b"),
        (T.DOMAIN, "-bad.example"),
        (T.DOMAIN, "x" * 64 + ".example"),
        (T.DOMAIN, ""),
        (T.URL, "http://"),
        (T.URL, "http://evil.example:99999/"),
        (T.MD5, "abc"),
        (T.SHA256, "g" * 64),
        (T.JA3, "e7d705a3286e19ea42f587b344ee686"),
        (T.JA4, "t13d1516h2_8daaf6152771"),
    ],
)
def test_invalid_values_raise_invalid_indicator(kind: IndicatorType, raw: str) -> None:
    with pytest.raises(InvalidIndicator):
        normalise(kind, raw)


def test_confidence_outside_0_100_is_rejected() -> None:
    with pytest.raises(InvalidIndicator, match="confidence"):
        make(T.IP, "192.0.2.1", source="s", confidence=101)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("192.0.2.1", T.IP),
        ("10.0.0.0/8", T.IP),
        ("::1", T.IP),
        ("http://x.example/", T.URL),
        ("x.example/a", T.URL),
        ("a" * 32, T.MD5),
        ("a" * 40, T.SHA1),
        ("a" * 64, T.SHA256),
        ("t13d1516h2_8daaf6152771_e5627efa2ab1", T.JA4),
        ("evil.example", T.DOMAIN),
    ],
)
def test_guess_type(raw: str, kind: IndicatorType) -> None:
    assert guess_type(raw) is kind


@given(kind=st.sampled_from(list(T)), raw=st.text(max_size=80))
def test_normalise_is_idempotent_or_rejects(kind: IndicatorType, raw: str) -> None:
    try:
        once = normalise(kind, raw)
    except InvalidIndicator:
        return
    assert normalise(kind, once) == once


@given(
    kind=st.sampled_from([T.URL, T.DOMAIN]),
    raw=st.from_regex(
        r"(https?://)?[A-Za-z0-9.-]{1,30}(:[0-9]{1,5})?(/[ -~]{0,20})?", fullmatch=True
    ),
)
def test_url_and_domain_shapes_normalise_idempotently(kind: IndicatorType, raw: str) -> None:
    try:
        once = normalise(kind, raw)
    except InvalidIndicator:
        return
    assert normalise(kind, once) == once


def test_a_nul_in_a_value_is_an_invalid_indicator_not_a_crash() -> None:
    for kind in T:
        with pytest.raises(InvalidIndicator):
            normalise(kind, "10.0.0\x001")
