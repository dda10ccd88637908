"""The per-tenant online anomaly model: warm-up, separation, determinism, bounded state."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a2z.records import Conn, Severity
from a2z.rules.anomaly import (
    FEATURES,
    RULE_ID,
    AnomalySettings,
    ConnAnomalyModel,
    TenantModels,
    conn_features,
)


def usual_traffic(rng: random.Random, n: int, start: int = 0) -> list[Conn]:
    """A workstation's normal day in miniature: DNS lookups and HTTPS sessions."""
    conns = []
    for i in range(start, start + n):
        port = rng.randint(30000, 60000)
        if rng.random() < 0.5:
            conn = Conn(
                ts=float(i), uid=f"D{i}", orig_h="10.0.0.5", orig_p=port, resp_h="10.0.0.53",
                resp_p=53, proto="udp", service="dns", duration=rng.uniform(0.001, 0.05),
                orig_bytes=rng.randint(30, 60), resp_bytes=rng.randint(60, 200),
                conn_state="SF", orig_pkts=1, resp_pkts=1,
            )  # fmt: skip
        else:
            conn = Conn(
                ts=float(i), uid=f"T{i}", orig_h="10.0.0.5", orig_p=port, resp_h="93.184.216.34",
                resp_p=443, proto="tcp", service="ssl", duration=rng.uniform(0.2, 5.0),
                orig_bytes=rng.randint(500, 3000), resp_bytes=rng.randint(5000, 200_000),
                conn_state="SF", history="ShADadFf", orig_pkts=rng.randint(8, 30),
                resp_pkts=rng.randint(10, 200),
            )  # fmt: skip
        conns.append(conn)
    return conns


EXFILTRATION = Conn(
    ts=1e6, uid="Cexfil", orig_h="10.0.0.5", orig_p=4444, resp_h="203.0.113.9", resp_p=31337,
    proto="tcp", duration=3600.0, orig_bytes=500_000_000, resp_bytes=100, conn_state="SF",
    orig_pkts=400_000, resp_pkts=200,
)  # fmt: skip
PROBE = Conn(
    ts=1e6, uid="Cprobe", orig_h="10.0.0.5", orig_p=4444, resp_h="10.0.0.9", resp_p=8081,
    proto="tcp", conn_state="REJ", orig_pkts=1, resp_pkts=1,
)  # fmt: skip


def trained(settings: AnomalySettings | None = None) -> ConnAnomalyModel:
    model = ConnAnomalyModel(settings)
    for conn in usual_traffic(random.Random(7), 3_000):
        model.observe(conn)
    return model


def test_scores_nothing_until_warm() -> None:
    model = ConnAnomalyModel(AnomalySettings(warm_up=500, window=250))
    scores = [model.observe(c) for c in usual_traffic(random.Random(1), 600)]
    assert scores[:500] == [None] * 500
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores[500:])
    assert model.warm and model.learned == 600


def test_unusual_connections_score_above_the_threshold_and_usual_ones_below() -> None:
    model = trained()
    usual = [model.observe(c) for c in usual_traffic(random.Random(8), 500, start=3_000)]
    threshold = model.settings.threshold
    assert max(s for s in usual if s is not None) < threshold
    for unusual in (EXFILTRATION, PROBE):
        score = model.observe(unusual)
        assert score is not None and score >= threshold, (unusual.uid, score)


def test_alert_carries_score_evidence_and_dedup_key() -> None:
    model = trained()
    score = model.observe(EXFILTRATION)
    assert score is not None
    alert = model.alert(EXFILTRATION, score)
    assert alert is not None
    assert alert.rule_id == RULE_ID and alert.severity is Severity.LOW
    assert alert.uids == ["Cexfil"] and alert.uid == "Cexfil"
    assert alert.score == round(score, 4)
    assert alert.dedup_key == f"{RULE_ID}|10.0.0.5|203.0.113.9|31337"
    assert model.alert(EXFILTRATION, model.settings.threshold - 0.01) is None


def test_same_stream_same_scores() -> None:
    """Seeded: replaying a capture gives the analyst the same scores twice."""
    first = [trained().observe(c) for c in (EXFILTRATION, PROBE)]
    second = [trained().observe(c) for c in (EXFILTRATION, PROBE)]
    assert first == second


def test_tenants_have_separate_models_and_the_count_is_bounded() -> None:
    models = TenantModels(AnomalySettings(warm_up=250, window=250), max_tenants=2)
    scored = models.observe("a", usual_traffic(random.Random(2), 300))
    assert len(scored) == 50  # "a" warmed up after 250
    assert models.observe("b", usual_traffic(random.Random(3), 10)) == []  # "b" still cold
    models.observe("c", usual_traffic(random.Random(4), 1))
    assert len(models) == 2 and models.evictions == 1  # "a", least recently used, went
    assert models.model("a").learned == 0  # back as a fresh model


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0.0}, {"threshold": 1.5}, {"warm_up": 10, "window": 250}, {"trees": 0}],
)
def test_settings_refuse_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        AnomalySettings(**kwargs)  # type: ignore[arg-type]


@given(
    duration=st.none() | st.floats(min_value=-1e9, max_value=1e12, allow_nan=False),
    orig_bytes=st.none() | st.integers(min_value=0, max_value=2**63),
    resp_bytes=st.none() | st.integers(min_value=0, max_value=2**63),
    pkts=st.integers(min_value=0, max_value=2**40),
    state=st.sampled_from(["S0", "SF", "REJ", "OTH", "RSTO", "S1"]),
    proto=st.sampled_from(["tcp", "udp", "icmp"]),
    port=st.integers(min_value=0, max_value=65535),
)
def test_features_are_always_within_the_unit_interval(
    duration: float | None,
    orig_bytes: int | None,
    resp_bytes: int | None,
    pkts: int,
    state: str,
    proto: str,
    port: int,
) -> None:
    conn = Conn(
        ts=0.0, uid="C", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2", resp_p=port,
        proto=proto, duration=duration, orig_bytes=orig_bytes, resp_bytes=resp_bytes,
        conn_state=state, orig_pkts=pkts, resp_pkts=pkts,
    )  # fmt: skip
    features = conn_features(conn)
    assert tuple(features) == FEATURES
    assert all(0.0 <= v <= 1.0 for v in features.values()), features
