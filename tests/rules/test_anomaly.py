"""The per-tenant anomaly model over per-source windows: warm-up, what it flags on real captures,
determinism, bounded state, tenant separation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a2z.agent.replay import iter_records
from a2z.records import Conn, Dns, Record, Severity
from a2z.rules.anomaly import (
    FEATURES,
    RULE_ID,
    AnomalySettings,
    SourceAnomalyModel,
    SourceWindow,
    TenantModels,
    window_features,
)
from a2z.rules.anomaly.window import link_control

DETECT = Path(__file__).resolve().parents[2] / "bench" / "data" / "detect"
ATTACKER = "10.77.0.1"  # the attacking source of the real-tool captures (labels.json)
NAMES = ("www.example.com", "mail.example.com", "cdn.example.net", "api.example.org")


def usual_traffic(rng: random.Random, n: int, start: float = 0.0, hosts: int = 20) -> list[Record]:
    """An office in miniature: ``hosts`` workstations that look names up and open HTTPS
    sessions to a few servers, a connection every few seconds each."""
    records: list[Record] = []
    ts = start
    for i in range(n):
        ts += rng.expovariate(1.0)
        src = f"10.0.0.{10 + rng.randrange(hosts)}"
        port = rng.randint(30000, 60000)
        if rng.random() < 0.4:
            query = rng.choice(NAMES)
            records.append(
                Dns(
                    ts=ts,
                    uid=f"D{i}",
                    orig_h=src,
                    orig_p=port,
                    resp_h="10.0.0.53",
                    resp_p=53,
                    proto="udp",
                    trans_id=i & 0xFFFF,
                    query=query,
                    qtype_name="A",
                    rcode_name="NOERROR",
                )
            )
            records.append(
                Conn(
                    ts=ts,
                    uid=f"D{i}",
                    orig_h=src,
                    orig_p=port,
                    resp_h="10.0.0.53",
                    resp_p=53,
                    proto="udp",
                    service="dns",
                    duration=rng.uniform(0.001, 0.05),
                    orig_bytes=rng.randint(30, 60),
                    resp_bytes=rng.randint(60, 200),
                    conn_state="SF",
                    orig_pkts=1,
                    resp_pkts=1,
                )
            )
        else:
            server = rng.choice(("93.184.216.34", "198.51.100.7", "203.0.113.80"))
            records.append(
                Conn(
                    ts=ts,
                    uid=f"T{i}",
                    orig_h=src,
                    orig_p=port,
                    resp_h=server,
                    resp_p=rng.choice((443, 443, 443, 80)),
                    proto="tcp",
                    service="ssl",
                    duration=rng.uniform(0.2, 5.0),
                    orig_bytes=rng.randint(500, 3000),
                    resp_bytes=rng.randint(5000, 200_000),
                    conn_state="SF",
                    history="ShADadFf",
                    orig_pkts=rng.randint(8, 30),
                    resp_pkts=rng.randint(10, 200),
                )
            )
    return records


# A tenant tuned below the default (0.99, chosen on make eval-detection's mixed validation set):
# its own hosts' traffic stays under 0.85, the real tools' scans and floods reach 0.98-0.99.
THRESHOLD = 0.95
SETTINGS = AnomalySettings(warm_up=1_500, window=250, threshold=THRESHOLD)


def trained(settings: AnomalySettings = SETTINGS) -> SourceAnomalyModel:
    model = SourceAnomalyModel(settings)
    for record in usual_traffic(random.Random(7), 3_000):
        model.observe(record)
    return model


def flagged_sources(model: SourceAnomalyModel, records: list[Record]) -> set[str]:
    return {
        r.orig_h
        for r in records
        if (s := model.observe(r)) is not None and s >= model.settings.threshold
    }


def test_scores_nothing_until_warm() -> None:
    model = SourceAnomalyModel(AnomalySettings(warm_up=500, window=250))
    conns = [r for r in usual_traffic(random.Random(1), 700) if isinstance(r, Conn)]
    scores = [model.observe(c) for c in conns]
    assert scores[:500] == [None] * 500
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores[500:])
    assert model.warm and model.learned == len(conns)
    assert model.observe(Dns(ts=0.0, uid="D", orig_h="10.0.0.10", orig_p=1, resp_h="10.0.0.53",
                             resp_p=53, proto="udp", trans_id=1, query="x.test")) is None  # fmt: skip


def scorable(record: Record) -> bool:
    return isinstance(record, Conn) and not link_control(record.resp_h)


def office() -> tuple[list[Record], list[Record]]:
    """The real office capture (scripts/make-benign-office.py): its first 60 % (to learn) and
    the rest (held out)."""
    records = [r for r in iter_records(DETECT / "benign-office.pcap") if isinstance(r, (Conn, Dns))]
    cut = len(records) * 6 // 10
    return records[:cut], records[cut:]


@pytest.mark.parametrize(
    "capture", ["nmap-syn-scan.pcap", "nmap-tcp-sweep.pcap", "hping3-syn-flood.pcap"]
)
def test_real_attack_source_is_flagged_and_held_out_benign_traffic_is_not(capture: str) -> None:
    """After warm-up on an office's real traffic, a real tool's scan, sweep or flood stands out
    by its source; the same office's later traffic (held out) does not."""
    learn, held_out = office()
    warm_up = sum(scorable(r) for r in learn)
    model = SourceAnomalyModel(AnomalySettings(warm_up=warm_up, window=250, threshold=THRESHOLD))
    for record in learn:
        model.observe(record)
    assert model.warm
    assert flagged_sources(model, held_out) == set()
    attack = [r for r in iter_records(DETECT / capture) if isinstance(r, (Conn, Dns))]
    assert flagged_sources(model, attack) == {ATTACKER}


def test_link_housekeeping_is_left_out() -> None:
    """Neighbour discovery and other multicast traffic is not a source's own activity."""
    model = trained()
    solicitation = Conn(ts=1e5, uid="Cnd", orig_h="fe80::1", orig_p=133, resp_h="ff02::2",
                        resp_p=134, proto="icmp", conn_state="OTH", orig_pkts=1)  # fmt: skip
    assert model.observe(solicitation) is None
    assert "fe80::1" not in model.windows


def test_one_alert_per_source_per_window_with_score_and_what_it_did() -> None:
    model = trained()
    attack = [r for r in iter_records(DETECT / "nmap-syn-scan.pcap") if isinstance(r, Conn)]
    alerts = []
    for conn in attack:
        score = model.observe(conn)
        if score is not None and (alert := model.alert(conn, score)) is not None:
            alerts.append((alert, score))
    assert len(alerts) == 1  # the scan lasts under a window: one alert, not one per probe
    alert, score = alerts[0]
    assert alert.rule_id == RULE_ID and alert.severity is Severity.LOW
    assert alert.dedup_key == f"{RULE_ID}|{ATTACKER}"
    assert alert.score == round(score, 4) and alert.uids == [alert.uid]
    assert "ports" in alert.title and "failed" in alert.title


def test_a_tenant_threshold_overrides_the_default() -> None:
    model = trained()
    conn = next(
        r
        for r in iter_records(DETECT / "nmap-syn-scan.pcap")
        if scorable(r) and r.orig_h == ATTACKER
    )
    score = model.observe(conn)
    assert score is not None
    assert model.alert(conn, score, threshold=min(score + 0.001, 1.0)) is None
    assert model.alert(conn, score, threshold=max(score - 0.001, 0.001)) is not None


def test_same_stream_same_scores() -> None:
    """Seeded: replaying a capture gives the analyst the same scores twice."""
    attack = list(iter_records(DETECT / "nmap-connect-scan.pcap"))
    first, second = trained(), trained()
    assert [first.observe(r) for r in attack] == [second.observe(r) for r in attack]


def test_source_windows_are_bounded_and_evictions_counted() -> None:
    model = SourceAnomalyModel(AnomalySettings(warm_up=250, window=250, max_sources=8,
                                               max_entries=16))  # fmt: skip
    for record in usual_traffic(random.Random(2), 2_000, hosts=40):
        model.observe(record)
    assert len(model.windows) == 8
    assert model.windows.evictions > 0
    busiest = max(model.windows._windows.values(), key=lambda w: w.stats().conns)
    assert busiest.stats().conns <= 16


def test_window_forgets_what_is_older_than_its_span() -> None:
    window = SourceWindow(span=60.0, max_entries=256)
    for i in range(10):
        window.add_conn(Conn(ts=float(i), uid=f"C{i}", orig_h="10.0.0.1", orig_p=1,
                             resp_h=f"10.0.1.{i}", resp_p=22, proto="tcp", conn_state="REJ"))  # fmt: skip
    assert window.stats().hosts == 10 and window.stats().failed == 10
    window.add_conn(Conn(ts=100.0, uid="Clate", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.1.1",
                         resp_p=443, proto="tcp", service="ssl", conn_state="SF"))  # fmt: skip
    stats = window.stats()
    assert (stats.conns, stats.hosts, stats.ports, stats.failed) == (1, 1, 1, 0)


def test_tenants_have_separate_models_and_the_count_is_bounded() -> None:
    models = TenantModels(AnomalySettings(warm_up=250, window=250), max_tenants=2)
    training = usual_traffic(random.Random(2), 500)
    conns = sum(isinstance(r, Conn) for r in training)
    assert len(models.observe("a", training)) == conns - 250  # "a" warmed up after 250
    assert models.observe("b", training[:10]) == []  # "b" still cold: a's traffic is not b's
    models.observe("c", training[:1])
    assert len(models) == 2 and models.evictions == 1  # "a", least recently used, went
    assert models.model("a").learned == 0  # back as a fresh model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"warm_up": 10, "window": 250},
        {"trees": 0},
        {"span": 0.0},
        {"max_sources": 0},
    ],
)
def test_settings_refuse_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        AnomalySettings(**kwargs)  # type: ignore[arg-type]


@given(
    records=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.none() | st.floats(min_value=-1e9, max_value=1e12, allow_nan=False),
            st.sampled_from(["S0", "SF", "REJ", "OTH", "RSTO", "S1"]),
            st.integers(min_value=0, max_value=65535),
            st.text(max_size=80),
            st.sampled_from([None, "NOERROR", "NXDOMAIN"]),
        ),
        max_size=40,
    )
)
def test_features_are_always_within_the_unit_interval(
    records: list[tuple[float, float | None, str, int, str, str | None]],
) -> None:
    window = SourceWindow(span=60.0, max_entries=16)
    for ts, duration, state, port, query, rcode in records:
        window.add_conn(Conn(ts=ts, uid="C", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2",
                             resp_p=port, proto="tcp", duration=duration, conn_state=state))  # fmt: skip
        window.add_dns(Dns(ts=ts, uid="D", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.53",
                           resp_p=53, proto="udp", trans_id=1, query=query, rcode_name=rcode))  # fmt: skip
        features = window_features(window.stats(), 16)
        assert tuple(features) == FEATURES
        assert all(0.0 <= v <= 1.0 for v in features.values()), features
