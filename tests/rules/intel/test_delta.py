"""Indicator-set deltas: diff, apply, versions, the wire form, and bad input."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2z.rules.intel import (
    DeltaError,
    DeltaVersionError,
    Indicator,
    IndicatorKey,
    IndicatorSet,
    IndicatorType,
    IntelDelta,
    apply,
    decode_delta,
    diff,
    encode_delta,
    make,
    snapshot,
)

T = IndicatorType
A = make(T.IP, "192.0.2.1", source="feed")
B = make(T.DOMAIN, "evil.example", source="feed", confidence=80)
C = make(T.URL, "http://evil.example/x", source="other", expires=2e9)


def test_diff_then_apply_takes_the_old_set_to_the_new() -> None:
    agent = IndicatorSet([A, B], version=3)
    changed_b = make(T.DOMAIN, "evil.example", source="feed", confidence=95)
    delta = diff([A, B], [changed_b, C], base=3, version=4)
    assert delta.removed == [IndicatorKey(T.IP, "192.0.2.1", "feed")]
    assert delta.added == [changed_b, C]
    apply(agent, decode_delta(encode_delta(delta)))
    assert agent.version == 4
    assert sorted(agent, key=lambda i: i.value) == sorted([changed_b, C], key=lambda i: i.value)


def test_a_delta_for_another_version_is_refused_and_changes_nothing() -> None:
    agent = IndicatorSet([A], version=5)
    with pytest.raises(DeltaVersionError) as info:
        apply(agent, IntelDelta(base=4, version=6, added=[B]))
    assert (info.value.have, info.value.base) == (5, 4)
    assert list(agent) == [A] and agent.version == 5


def test_a_full_delta_replaces_whatever_the_set_had() -> None:
    server = IndicatorSet([B, C], version=9)
    agent = IndicatorSet([A], version=2)
    apply(agent, decode_delta(encode_delta(snapshot(server))))
    assert agent.version == 9 and sorted(i.value for i in agent) == sorted(i.value for i in server)


def test_the_wire_form_is_compact() -> None:
    delta = IntelDelta(base=1, version=2, added=[A])
    wire = encode_delta(delta)
    assert len(wire) < 60  # indicators are arrays, not maps with their field names
    assert msgspec.msgpack.decode(wire)["added"] == [["ip", "192.0.2.1", "feed", 50, None, None]]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x93\x01\x02\x03",
        msgspec.msgpack.encode({"base": "x", "version": 1}),
        msgspec.msgpack.encode({"base": 1, "version": 2, "added": [["ip", "not-an-ip", "s"]]}),
        msgspec.msgpack.encode({"base": 1, "version": 2, "added": [["ip", "10.1.2.3/8", "s"]]}),
        msgspec.msgpack.encode({"base": 1, "version": 2, "added": [["ip", "10.0.0.1", "s", 400]]}),
        msgspec.msgpack.encode({"base": 1, "version": 2, "added": [["nosuch", "x", "s"]]}),
    ],
)
def test_bad_deltas_raise_delta_error(data: bytes) -> None:
    with pytest.raises(DeltaError):
        decode_delta(data)


def test_unknown_schema_is_refused() -> None:
    with pytest.raises(DeltaError, match="schema"):
        apply(IndicatorSet(), IntelDelta(base=0, version=1, schema=2))


indicators = st.builds(
    lambda kind_value, source, conf: make(
        kind_value[0], kind_value[1], source=source, confidence=conf
    ),
    st.one_of(
        st.tuples(
            st.just(T.IP),
            st.sampled_from(["192.0.2.1", "192.0.2.2", "10.0.0.0/8", "2001:db8::/32"]),
        ),
        st.tuples(st.just(T.DOMAIN), st.sampled_from(["a.example", "b.example", "example"])),
        st.tuples(st.just(T.MD5), st.sampled_from(["a" * 32, "b" * 32])),
    ),
    st.sampled_from(["s1", "s2"]),
    st.integers(0, 100),
)


def identity_map(items: list[Indicator]) -> dict[tuple[IndicatorType, str, str], Indicator]:
    return {i.key: i for i in items}


@settings(max_examples=200, deadline=None)
@given(old=st.lists(indicators, max_size=12), new=st.lists(indicators, max_size=12))
def test_apply_of_diff_always_reaches_the_new_set(
    old: list[Indicator], new: list[Indicator]
) -> None:
    agent = IndicatorSet(old, version=7)
    apply(agent, decode_delta(encode_delta(diff(old, new, base=7, version=8))))
    assert identity_map(list(agent)) == identity_map(new)
    assert len(agent) == len(identity_map(new))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_decode_or_raise_delta_error(data: bytes) -> None:
    try:
        delta = decode_delta(data)
    except DeltaError:
        return
    apply(IndicatorSet(), IntelDelta(base=0, version=delta.version, full=True, added=delta.added))
