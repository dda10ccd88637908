"""Sigma correlation rules: every type, conditions and ranges, aliases, chains, time and state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from a2z.records import Alert, Severity
from a2z.rules import RuleError, UnsupportedRuleError
from a2z.rules.correlation import (
    SWEEP_EVERY,
    CorrelationSet,
    CorrelationSettings,
    Correlator,
    compile_correlations,
)
from a2z.rules.fields import RuleRecord
from tests.rules.builders import conn, http

SPEC_SCHEMA = Path(__file__).parents[1] / "data" / "sigma-correlation"
T0 = 1_000_000.0
UA, UB = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"

# Base rules on our records. The spec's login examples become HTTP basic-auth logins.
FAILED_LOGIN = {
    "title": "HTTP basic auth failed",
    "id": "53ba33fd-3a50-4468-a5ef-c583635cfa92",
    "name": "failed_login",
    "logsource": {"product": "zeek", "service": "http"},
    "detection": {"selection": {"status_code": 401}, "condition": "selection"},
    "tags": ["attack.credential-access", "attack.t1110.001"],
}
SUCCESSFUL_LOGIN = {
    "title": "HTTP basic auth accepted",
    "id": "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8",
    "name": "successful_login",
    "logsource": {"product": "zeek", "service": "http"},
    "detection": {"selection": {"status_code": 200}, "condition": "selection"},
}


def conn_rule(name: str, state: str) -> dict[str, Any]:
    return {
        "title": f"conn {state}",
        "id": f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
        "name": name,
        "logsource": {"product": "zeek", "service": "conn"},
        "detection": {"selection": {"conn_state": state}, "condition": "selection"},
    }


S0, REJ, SF = conn_rule("conn_s0", "S0"), conn_rule("conn_rej", "REJ"), conn_rule("conn_sf", "SF")


def correlation(
    ctype: str, rules: list[str], group_by: list[str], timespan: str = "1m", **extra: Any
) -> dict[str, Any]:
    meta = {k: extra.pop(k) for k in ("title", "id", "name", "level", "tags") if k in extra}
    return {
        "title": meta.pop("title", f"{ctype} correlation"),
        "id": meta.pop("id", "b180ead8-d58f-40b2-ae54-c8940995b9b6"),
        **meta,
        "correlation": {
            "type": ctype,
            "rules": rules,
            "group-by": group_by,
            "timespan": timespan,
            **extra,
        },
    }


def build(*docs: dict[str, Any]) -> CorrelationSet:
    load = compile_correlations([(None, yaml.safe_dump_all(docs))])
    assert [str(e) for e in load.errors] == []
    return load.rules


def run(
    rules: CorrelationSet,
    records: list[RuleRecord],
    settings: CorrelationSettings | None = None,
    tenant: str = "t1",
) -> tuple[list[Alert], Correlator]:
    correlator = Correlator(rules, settings or CorrelationSettings(tolerance=0.0))
    alerts = [a for r in records for a in correlator.process(tenant, r)]
    return alerts + correlator.flush(tenant), correlator


def c(ts: float, state: str = "S0", src: str = "10.0.0.1", port: int = 80, uid: str = "") -> Any:
    return conn(
        ts=T0 + ts, conn_state=state, orig_h=src, resp_p=port, uid=uid or f"C{ts}-{state}-{port}"
    )


# --- event_count ---------------------------------------------------------------------------


def test_spec_event_count_example_fires_once_per_group_at_threshold() -> None:
    rules = build(
        correlation("event_count", ["failed_login"], ["id.resp_h"], "1h", condition={"gte": 5}),
        FAILED_LOGIN,
    )
    failed = [http(ts=T0 + i, status_code=401, uid=f"F{i}") for i in range(12)]
    other = [http(ts=T0 + i, status_code=401, resp_h="10.9.9.9", uid=f"O{i}") for i in range(4)]
    alerts, correlator = run(rules, sorted(failed + other, key=lambda r: r.ts))
    assert [a.uids for a in alerts] == [
        ["F0", "F1", "F2", "F3", "F4"],
        ["F5", "F6", "F7", "F8", "F9"],
    ]
    assert alerts[0].ts == T0 + 4 and alerts[0].uid == "F4"
    assert alerts[0].dedup_key == "b180ead8-d58f-40b2-ae54-c8940995b9b6|10.66.0.20"
    assert correlator.totals.events == 16 and correlator.totals.alerts == 2


def test_event_count_window_slides_and_old_matches_leave_it() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "10s", condition={"gte": 3}), S0
    )
    # 0, 5, 11, 16: no three within 10 s; then 20 and 21 join 11 and 16's neighbours.
    alerts, _ = run(rules, [c(0), c(5), c(11), c(16), c(20)])
    assert [a.uids for a in alerts] == [["C11-S0-80", "C16-S0-80", "C20-S0-80"]]


def test_gt_condition_needs_one_more_than_gte() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "1m", condition={"gt": 2}), S0
    )
    assert run(rules, [c(0), c(1)])[0] == []
    assert len(run(rules, [c(0), c(1), c(2)])[0]) == 1


# --- conditions with an upper bound: judged when the window is over -------------------------


def test_range_condition_is_judged_when_the_window_ends() -> None:
    rules = build(
        correlation(
            "event_count", ["conn_s0"], ["id.orig_h"], "10s", condition={"gt": 2, "lte": 4}
        ),
        S0,
    )
    correlator = Correlator(rules, CorrelationSettings(tolerance=0.0))
    out = [a for r in (c(0), c(1), c(2)) for a in correlator.process("t", r)]
    assert out == []  # three is in range, but a fourth or fifth could still come
    [alert] = correlator.process("t", c(11, "SF"))  # time passes the window's end (0 + 10 s)
    assert alert.uids == ["C0-S0-80", "C1-S0-80", "C2-S0-80"] and alert.ts == T0 + 2
    too_many, _ = run(rules, [c(i) for i in range(5)])
    assert too_many == []
    in_range, _ = run(rules, [c(i) for i in range(4)])
    assert len(in_range) == 1


@pytest.mark.parametrize(
    ("cond", "counts_that_fire"),
    [
        ({"lt": 3}, [1, 2]),
        ({"lte": 3}, [1, 2, 3]),
        ({"eq": 2}, [2]),
        ({"neq": 2}, [1, 3, 4]),
        ({"gte": 2, "lt": 4}, [2, 3]),
    ],
)
def test_upper_bound_conditions(cond: dict[str, int], counts_that_fire: list[int]) -> None:
    rules = build(correlation("event_count", ["conn_s0"], ["id.orig_h"], "1m", condition=cond), S0)
    fired = [n for n in range(1, 5) if run(rules, [c(i) for i in range(n)])[0]]
    assert fired == counts_that_fire


def test_window_is_judged_by_advance_without_new_records() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "10s", condition={"lt": 2}), S0
    )
    correlator = Correlator(rules, CorrelationSettings(tolerance=5.0))
    assert correlator.process("t", c(0)) == []
    assert correlator.advance("t", T0 + 14) == []  # watermark 9: the window (to 10) is open
    [alert] = correlator.advance("t", T0 + 16)
    assert alert.uids == ["C0-S0-80"]


# --- value_count ----------------------------------------------------------------------------


def test_spec_value_count_counts_distinct_values_per_group() -> None:
    rules = build(
        correlation(
            "value_count",
            ["conn_s0"],
            ["id.orig_h"],
            "1d",
            condition={"field": "id.resp_p", "gte": 3},
        ),
        S0,
    )
    # A port scan: many connections, but only the third distinct port fires.
    records = [c(0, port=22), c(1, port=22), c(2, port=80), c(3, port=22), c(4, port=443)]
    alerts, _ = run(rules, records)
    [alert] = alerts
    assert alert.uids == ["C2-S0-80", "C3-S0-22", "C4-S0-443"]  # latest match of each value
    other_source = [c(i, src="10.0.0.2", port=1000 + i) for i in range(2)]
    assert run(rules, records[:2] + other_source)[0] == []


def test_value_count_with_two_fields_counts_distinct_pairs() -> None:
    rules = build(
        correlation(
            "value_count",
            ["conn_s0"],
            ["id.orig_h"],
            "1h",
            condition={"field": ["id.resp_h", "id.resp_p"], "gte": 2},
        ),
        S0,
    )
    same_pair = [conn(ts=T0 + i, conn_state="S0", resp_h="10.1.1.1", resp_p=80) for i in range(3)]
    assert run(rules, same_pair)[0] == []
    two_pairs = [*same_pair, conn(ts=T0 + 9, conn_state="S0", resp_h="10.1.1.1", resp_p=81)]
    assert len(run(rules, two_pairs)[0]) == 1


def test_value_count_lt_judges_distinct_values_at_window_end() -> None:
    rules = build(
        correlation(
            "value_count",
            ["conn_s0"],
            ["id.orig_h"],
            "1m",
            condition={"field": "id.resp_p", "lt": 2},
        ),
        S0,
    )
    assert len(run(rules, [c(0, port=80), c(1, port=80)])[0]) == 1
    assert run(rules, [c(0, port=80), c(1, port=81)])[0] == []


# --- temporal and temporal_ordered ----------------------------------------------------------


def test_spec_temporal_fires_when_all_rules_match_in_any_order() -> None:
    rules = build(
        correlation("temporal", ["conn_s0", "conn_rej", "conn_sf"], ["id.orig_h"], "5m"),
        S0,
        REJ,
        SF,
    )
    alerts, _ = run(rules, [c(0, "SF"), c(10, "REJ"), c(20, "REJ"), c(30, "S0")])
    [alert] = alerts
    assert alert.uids == ["C0-SF-80", "C20-REJ-80", "C30-S0-80"]
    assert run(rules, [c(0, "SF"), c(10, "REJ"), c(400, "S0")])[0] == []  # not within 5 min


def test_temporal_with_count_condition_needs_that_many_rules() -> None:
    rules = build(
        correlation(
            "temporal",
            ["conn_s0", "conn_rej", "conn_sf"],
            ["id.orig_h"],
            "5m",
            condition={"gte": 2},
        ),
        S0,
        REJ,
        SF,
    )
    assert run(rules, [c(0, "S0"), c(1, "S0")])[0] == []
    assert len(run(rules, [c(0, "S0"), c(1, "SF")])[0]) == 1


def test_temporal_ordered_needs_the_listed_order() -> None:
    rules = build(
        correlation("temporal_ordered", ["conn_s0", "conn_rej", "conn_sf"], ["id.orig_h"], "5m"),
        S0,
        REJ,
        SF,
    )
    assert run(rules, [c(0, "SF"), c(10, "REJ"), c(30, "S0")])[0] == []
    [alert] = run(rules, [c(0, "S0"), c(5, "SF"), c(10, "REJ"), c(30, "SF")])[0]
    assert alert.uids == ["C0-S0-80", "C10-REJ-80", "C30-SF-80"]
    # The latest start wins: S0 at 200 leaves time for REJ at 260 and SF at 490 (within 300 s).
    [late] = run(rules, [c(0, "S0"), c(200, "S0"), c(260, "REJ"), c(490, "SF")])[0]
    assert late.uids == ["C200-S0-80", "C260-REJ-80", "C490-SF-80"]


def test_temporal_ordered_one_match_never_fills_two_places() -> None:
    rules = build(correlation("temporal_ordered", ["conn_s0", "conn_s0"], ["id.orig_h"], "1m"), S0)
    assert run(rules, [c(0)])[0] == []
    assert len(run(rules, [c(0), c(1)])[0]) == 1


# --- the spec's chained example and its aliases ---------------------------------------------


def test_spec_chain_many_failed_logins_then_success() -> None:
    outer = correlation(
        "temporal_ordered",
        ["multiple_failed_login", "successful_login"],
        ["username"],
        "10m",
        title="Correlation - Multiple Failed Logins Followed by Successful Login",
        level="high",
    )
    inner = correlation(
        "event_count",
        ["failed_login"],
        ["username"],
        "10m",
        condition={"gte": 10},
        title="Multiple failed logons",
        id="a8418a5a-5fc4-46b5-b23b-6c73beb19d41",
        name="multiple_failed_login",
    )
    rules = build(outer, inner, FAILED_LOGIN, SUCCESSFUL_LOGIN)
    assert rules.silent_rule_ids == {FAILED_LOGIN["id"], SUCCESSFUL_LOGIN["id"]}
    tries = [http(ts=T0 + i, status_code=401, username="admin", uid=f"F{i}") for i in range(10)]
    ok = http(ts=T0 + 60, status_code=200, username="admin", uid="OK")
    other_user = http(ts=T0 + 61, status_code=200, username="bob", uid="BOB")
    early = http(ts=T0 - 1, status_code=200, username="admin", uid="EARLY")
    alerts, _ = run(rules, [early, *tries, ok, other_user])
    [alert] = alerts  # the inner correlation is silent (generate: false); EARLY came before
    assert alert.title == "Correlation - Multiple Failed Logins Followed by Successful Login"
    assert alert.severity is Severity.HIGH
    assert alert.uids == [*(f"F{i}" for i in range(10)), "OK"]
    assert alert.attack == ["T1110.001"]  # inherited from the failed-login rule's tags
    assert alert.dedup_key.endswith("|admin")
    assert run(rules, [*tries[:9], ok])[0] == []


def test_generate_true_lets_the_inner_correlation_alert_too() -> None:
    outer = correlation(
        "temporal_ordered", ["many_s0", "conn_sf"], ["id.orig_h"], "1m", generate=True
    )
    inner = correlation(
        "event_count", ["conn_s0"], ["id.orig_h"], "1m", condition={"gte": 2},
        id="a8418a5a-5fc4-46b5-b23b-6c73beb19d41", name="many_s0", title="many S0",
    )  # fmt: skip
    rules = build(outer, inner, S0, SF)
    assert rules.silent_rule_ids == {S0["id"]}  # only the inner uses it, without generate
    alerts, _ = run(rules, [c(0), c(1), c(2, "SF")])
    assert [a.title for a in alerts] == ["many S0", "temporal_ordered correlation"]


def test_spec_aliases_group_across_different_fields() -> None:
    internal_error = {
        "title": "internal error",
        "id": "11111111-0000-4000-8000-000000000001",
        "name": "internal_error",
        "logsource": {"product": "zeek", "service": "http"},
        "detection": {"selection": {"status_code": 500}, "condition": "selection"},
    }
    new_connection = {
        "title": "new network connection",
        "id": "11111111-0000-4000-8000-000000000002",
        "name": "new_network_connection",
        "logsource": {"product": "zeek", "service": "conn"},
        "detection": {"selection": {"conn_state": "SF"}, "condition": "selection"},
    }
    rule = correlation(
        "temporal",
        ["internal_error", "new_network_connection"],
        ["internal_ip", "remote_ip"],
        "10s",
        aliases={
            "internal_ip": {"internal_error": "id.resp_h", "new_network_connection": "id.orig_h"},
            "remote_ip": {"internal_error": "id.orig_h", "new_network_connection": "id.resp_h"},
        },
    )
    rules = build(rule, internal_error, new_connection)
    error = http(ts=T0, status_code=500, orig_h="203.0.113.7", resp_h="10.0.0.5", uid="E")
    back = conn(ts=T0 + 3, conn_state="SF", orig_h="10.0.0.5", resp_h="203.0.113.7", uid="B")
    elsewhere = conn(ts=T0 + 3, conn_state="SF", orig_h="10.0.0.5", resp_h="198.51.100.1")
    [alert] = run(rules, [error, elsewhere, back])[0]
    assert alert.uids == ["E", "B"]
    assert alert.dedup_key.endswith("|10.0.0.5|203.0.113.7")
    assert (
        run(
            rules,
            [error, conn(ts=T0 + 30, conn_state="SF", orig_h="10.0.0.5", resp_h="203.0.113.7")],
        )[0]
        == []
    )


def test_taxonomy_field_names_in_group_by_map_like_the_rule_fields() -> None:
    firewall = {
        "title": "blocked",
        "id": "22222222-0000-4000-8000-000000000001",
        "logsource": {"category": "firewall"},
        "detection": {"selection": {"dst_port": 445}, "condition": "selection"},
    }
    rules = build(
        correlation("event_count", [firewall["id"]], ["src_ip"], "1m", condition={"gte": 2}),
        firewall,
    )
    records = [c(0, port=445, src="10.0.0.1"), c(1, port=445, src="10.0.0.2"), c(2, port=445)]
    [alert] = run(rules, records)[0]
    assert alert.dedup_key.endswith("|10.0.0.1")


# --- time: disorder, lateness, expiry -------------------------------------------------------


def test_out_of_order_within_tolerance_gives_the_sorted_result() -> None:
    rules = build(
        correlation("temporal_ordered", ["conn_s0", "conn_sf"], ["id.orig_h"], "1m"), S0, SF
    )
    disordered = [c(5, "SF"), c(2, "S0")]  # S0 happened first but arrives second
    settings = CorrelationSettings(tolerance=10.0)
    [alert] = run(rules, disordered, settings)[0]
    assert alert.uids == ["C2-S0-80", "C5-SF-80"]
    assert run(rules, disordered, CorrelationSettings(tolerance=0.0))[0] == []


def test_matches_older_than_the_tolerance_are_counted_and_dropped() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "1h", condition={"gte": 2}), S0
    )
    alerts, correlator = run(rules, [c(100), c(50), c(95)], CorrelationSettings(tolerance=10.0))
    assert [a.uids for a in alerts] == [["C95-S0-80", "C100-S0-80"]]
    assert correlator.totals.late == 1 and correlator.totals.events == 2


def test_records_from_a_clock_far_ahead_are_dropped_not_trusted() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "1h", condition={"gte": 2}), S0
    )
    correlator = Correlator(rules, CorrelationSettings(max_future=60.0), clock=lambda: T0)
    assert correlator.process("t", c(3600)) == []  # one agent's clock an hour ahead
    assert correlator.process("t", c(0)) == correlator.process("t", c(1)) == []
    assert len(correlator.flush("t")) == 1  # the others were not made late by it
    assert correlator.stats("t").future == 1


def test_idle_groups_expire_once_their_window_has_passed() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "10s", condition={"gte": 5}), S0
    )
    correlator = Correlator(rules, CorrelationSettings(tolerance=0.0))
    for i in range(20):
        correlator.process("t", c(i, src=f"10.0.1.{i}"))
    # The sources seen in the last 10 s, plus those whose expiry waits for the next sweep.
    assert 11 <= correlator.open_groups("t") <= 11 + SWEEP_EVERY
    correlator.advance("t", T0 + 100)
    assert correlator.open_groups("t") == 0
    assert correlator.stats("t").expired == 20


def test_group_cap_evicts_the_least_recently_updated_and_counts_it() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "1h", condition={"gte": 2}), S0
    )
    settings = CorrelationSettings(tolerance=0.0, max_groups=3)
    records = [c(i, src=f"10.0.2.{i}") for i in range(5)] + [
        c(10, src="10.0.2.0"),
        c(11, src="10.0.2.4"),
    ]
    alerts, correlator = run(rules, records, settings)
    assert [a.dedup_key.rsplit("|", 1)[1] for a in alerts] == ["10.0.2.4"]  # 10.0.2.0 was evicted
    assert correlator.totals.evicted == 3  # .0 and .1 by .3 and .4, then .2 by .0's return
    assert correlator.open_groups("t1") <= 3


def test_alert_evidence_is_capped_to_the_most_recent() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "1h", condition={"gte": 50}), S0
    )
    [alert] = run(
        rules, [c(i) for i in range(50)], CorrelationSettings(tolerance=0.0, max_evidence=4)
    )[0]
    assert alert.uids == ["C46-S0-80", "C47-S0-80", "C48-S0-80", "C49-S0-80"]


def test_matches_without_the_group_field_are_counted_not_grouped() -> None:
    rules = build(
        correlation("event_count", ["failed_login"], ["username"], "1h", condition={"gte": 1}),
        FAILED_LOGIN,
    )
    alerts, correlator = run(rules, [http(ts=T0, status_code=401, username=None)])
    assert alerts == [] and correlator.totals.ungrouped == 1


def test_tenants_keep_separate_state() -> None:
    rules = build(
        correlation("event_count", ["conn_s0"], ["id.orig_h"], "1h", condition={"gte": 2}), S0
    )
    correlator = Correlator(rules, CorrelationSettings(tolerance=0.0))
    assert correlator.process("a", c(0)) == []
    assert correlator.process("b", c(1)) == []  # same source, other tenant: not a second match
    assert len(correlator.process("a", c(2))) == 1
    assert correlator.stats("b").alerts == 0 and correlator.stats("a").alerts == 1


def test_alert_carries_correlation_metadata() -> None:
    rules = build(
        correlation(
            "event_count", ["conn_s0"], ["id.orig_h", "id.resp_p"], "1h", condition={"gte": 2},
            id="0e95725d-7320-415d-80f7-004da920fc11", title="SYN scan", level="critical",
            tags=["attack.discovery", "attack.t1046"],
        ),
        S0,
    )  # fmt: skip
    [alert] = run(rules, [c(0, uid="A"), c(1, uid="B")])[0]
    assert (alert.rule_id, alert.title, alert.severity) == (
        "0e95725d-7320-415d-80f7-004da920fc11",
        "SYN scan",
        Severity.CRITICAL,
    )
    assert alert.attack == ["T1046"]
    assert (alert.uid, alert.orig_h, alert.resp_p, alert.ts) == ("B", "10.0.0.1", 80, T0 + 1)
    assert alert.dedup_key == "0e95725d-7320-415d-80f7-004da920fc11|10.0.0.1|80"


# --- what is not supported is reported, not fatal -------------------------------------------


def errors_of(*docs: dict[str, Any]) -> list[RuleError]:
    return compile_correlations([(None, yaml.safe_dump_all(docs))]).errors


def test_metric_correlation_types_are_reported_unsupported() -> None:
    [err] = errors_of(
        correlation(
            "value_sum", ["conn_s0"], ["id.orig_h"], condition={"field": "orig_bytes", "gt": 1}
        ),
        S0,
    )
    assert isinstance(err, UnsupportedRuleError) and err.feature == "correlation type value_sum"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (correlation("event_count", ["nosuch"], ["id.orig_h"], condition={"gte": 1}), "not loaded"),
        (correlation("event_count", ["conn_s0"], ["id.orig_h"], condition={"gte": "x"}), "condition"),
        (correlation("event_count", ["conn_s0"], ["id.orig_h"], timespan="10x", condition={"gte": 1}), "imespan"),
        (correlation("value_count", ["conn_s0"], ["id.orig_h"], condition={"gte": 1}), "field"),
        (correlation("event_count", ["conn_s0"], ["nosuch"], condition={"gte": 1}), "nosuch"),
        (correlation("temporal", ["conn_s0"], ["ip"], aliases={"ip": {"other": "x"}}), "alias"),
        (correlation("temporal_ordered", ["conn_s0"], ["id.orig_h"], condition={"gte": 0}), "order"),
        (correlation("temporal", ["conn_s0"], ["id.orig_h"], condition="conn_s0 and conn_s0"), "extended"),
    ],
)  # fmt: skip
def test_bad_or_unsupported_correlations_are_reported(doc: dict[str, Any], message: str) -> None:
    [err] = errors_of(doc, S0)
    assert message in str(err)
    assert err.rule_id == doc["id"]


def test_reference_cycles_and_upper_bound_chains_are_reported() -> None:
    a = correlation("event_count", ["b"], ["id.orig_h"], condition={"gte": 1}, id=UA, name="a")
    b = correlation("event_count", ["a"], ["id.orig_h"], condition={"gte": 1}, id=UB, name="b")
    assert all("cycle" in str(e) for e in errors_of(a, b)) and len(errors_of(a, b)) == 2
    inner = correlation(
        "event_count", ["conn_s0"], ["id.orig_h"], condition={"lt": 3}, id=UA, name="i"
    )
    outer = correlation("temporal", ["i"], ["id.orig_h"], id=UB)
    [err] = errors_of(outer, inner, S0)
    assert "upper bound" in str(err) and err.rule_id == UB


def test_one_bad_correlation_does_not_stop_the_others() -> None:
    good = correlation("event_count", ["conn_s0"], ["id.orig_h"], condition={"gte": 1}, id=UA)
    bad = correlation("event_count", ["nosuch"], ["id.orig_h"], condition={"gte": 1}, id=UB)
    load = compile_correlations([("x.yml", yaml.safe_dump_all([good, bad, S0])), ("y.yml", "a: [")])
    assert [r.rule_id for r in load.rules.correlations] == [UA]
    assert sorted(str(e).split(":")[0] for e in load.errors) == ["x.yml", "y.yml"]


def test_spec_schema_examples_parse_and_need_only_their_rules() -> None:
    """The spec's own test documents (tests/data/sigma-correlation, from sigma-specification)."""
    files = sorted(SPEC_SCHEMA.glob("*.yml"))
    assert len(files) == 8
    for path in files:
        load = compile_correlations([(str(path), path.read_text(encoding="utf-8"))])
        [err] = load.errors
        ctype = yaml.safe_load(path.read_text(encoding="utf-8"))["correlation"]["type"]
        if ctype in ("value_sum", "value_avg", "value_percentile"):
            assert isinstance(err, UnsupportedRuleError), path
        else:
            assert "which is not loaded" in str(err), path


def test_temporal_ordered_evidence_takes_the_latest_of_each_step() -> None:
    rules = build(
        correlation("temporal_ordered", ["conn_s0", "conn_rej", "conn_sf"], ["id.orig_h"], "1m"),
        S0,
        REJ,
        SF,
    )
    [alert] = run(rules, [c(0, "S0"), c(1, "REJ"), c(2, "REJ"), c(3, "SF")])[0]
    assert alert.uids == ["C0-S0-80", "C2-REJ-80", "C3-SF-80"]
