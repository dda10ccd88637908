"""The Correlator agrees with a brute-force evaluator on random disordered streams.

The brute force states the semantics directly (drop late matches, sort, then recompute every
window from the full list at every match); the Correlator does it incrementally with bounded
state, a reorder heap, eviction and expiry. Any difference is a bug in one of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from a2z.records import Conn
from a2z.rules.correlation import CorrelationSettings, Correlator, compile_correlations
from tests.rules.builders import conn

T0 = 5_000_000.0
STATES = ("S0", "REJ", "SF")
NAMES = {"S0": "conn_s0", "REJ": "conn_rej", "SF": "conn_sf"}
BASE = [
    {
        "title": f"conn {state}",
        "id": f"00000000-0000-4000-8000-00000000000{i}",
        "name": NAMES[state],
        "logsource": {"product": "zeek", "service": "conn"},
        "detection": {"selection": {"conn_state": state}, "condition": "selection"},
    }
    for i, state in enumerate(STATES)
]
RULE_ID = "c0c0c0c0-0000-4000-8000-000000000000"
OPS = {
    "gt": lambda n, v: n > v,
    "gte": lambda n, v: n >= v,
    "lt": lambda n, v: n < v,
    "lte": lambda n, v: n <= v,
    "eq": lambda n, v: n == v,
    "neq": lambda n, v: n != v,
}


@dataclass(frozen=True)
class Spec:
    ctype: str
    rules: list[str]  # conn states, in the correlation's order
    group: bool  # group by id.orig_h, or one group for everything
    span: int
    bounds: dict[str, int]  # empty: the temporal default (all rules)
    tolerance: float
    max_evidence: int


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    ctype = draw(st.sampled_from(["event_count", "value_count", "temporal", "temporal_ordered"]))
    if ctype == "temporal_ordered":
        rules = draw(st.lists(st.sampled_from(STATES), min_size=1, max_size=3))
    else:
        rules = draw(st.lists(st.sampled_from(STATES), min_size=1, max_size=3, unique=True))
    bounds: dict[str, int] = {}
    if ctype != "temporal_ordered" and (ctype != "temporal" or draw(st.booleans())):
        ops = draw(st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=2, unique=True))
        bounds = {op: draw(st.integers(0, 4)) for op in ops}
    return Spec(
        ctype=ctype,
        rules=rules,
        group=draw(st.booleans()),
        span=draw(st.sampled_from([1, 3, 10, 40])),
        bounds=bounds,
        tolerance=draw(st.sampled_from([0.0, 2.0, 8.0, 1000.0])),
        max_evidence=draw(st.sampled_from([2, 5, 100])),
    )


events = st.lists(
    st.tuples(
        st.integers(0, 60),  # ts offset, in arrival order (so disordered)
        st.sampled_from(STATES),
        st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        st.sampled_from([22, 80, 443]),
    ),
    max_size=40,
)


def document(spec: Spec) -> str:
    section: dict[str, Any] = {
        "type": spec.ctype,
        "rules": [NAMES[s] for s in spec.rules],
        "group-by": ["id.orig_h"] if spec.group else [],
        "timespan": f"{spec.span}s",
    }
    if spec.bounds or spec.ctype == "value_count":
        section["condition"] = dict(spec.bounds)
    if spec.ctype == "value_count":
        section["condition"]["field"] = "id.resp_p"
    return yaml.safe_dump_all([{"title": "c", "id": RULE_ID, "correlation": section}, *BASE])


Fired = tuple[str, float, str, tuple[str, ...]]


def brute_force(spec: Spec, records: list[Conn]) -> list[Fired]:
    """The semantics of docs/detections-intel.md, recomputed from scratch at every match."""
    kept: list[tuple[float, int, Conn]] = []
    newest = -math.inf
    for i, rec in enumerate(records):
        if rec.conn_state in spec.rules and rec.ts >= newest - spec.tolerance:
            kept.append((rec.ts, i, rec))
        newest = max(newest, rec.ts)
    kept.sort(key=lambda k: (k[0], k[1]))
    groups: dict[tuple[str, ...], list[Conn]] = {}
    for _, _, rec in kept:
        groups.setdefault((rec.orig_h,) if spec.group else (), []).append(rec)
    bounds = spec.bounds or {"gte": len(spec.rules)}

    def holds(n: int) -> bool:
        return all(OPS[op](n, v) for op, v in bounds.items())

    def agg(rec: Conn) -> object:
        if spec.ctype == "value_count":
            return rec.resp_p
        return spec.rules.index(rec.conn_state)

    out: list[Fired] = []
    for gkey, evs in groups.items():
        dedup = "|".join([RULE_ID, *gkey])

        def fire(last: Conn, uids: list[str], dedup: str = dedup) -> None:
            out.append((dedup, last.ts, last.uid, tuple(uids[-spec.max_evidence :])))

        start = 0
        if spec.ctype == "temporal_ordered":
            for j, e in enumerate(evs):
                if e.conn_state != spec.rules[-1]:
                    continue
                chain, idx = [j], j
                for want in reversed(spec.rules[:-1]):
                    earlier = [i for i in range(start, idx) if evs[i].conn_state == want]
                    if not earlier:
                        break
                    idx = earlier[-1]
                    chain.insert(0, idx)
                if len(chain) == len(spec.rules) and e.ts - evs[chain[0]].ts <= spec.span:
                    fire(e, [evs[i].uid for i in chain])
                    start = j + 1
        elif all(op in ("gt", "gte") for op in bounds):
            for j, e in enumerate(evs):
                window = [x for x in evs[start : j + 1] if x.ts >= e.ts - spec.span]
                if spec.ctype == "event_count":
                    uids = [x.uid for x in window]
                else:  # the latest match of each distinct value, ordered by it
                    latest = {agg(x): x for x in window}
                    uids = [x.uid for x in sorted(latest.values(), key=window.index)]
                if holds(len(uids)):
                    fire(e, uids)
                    start = j + 1
        else:
            windows: list[list[Conn]] = []
            for e in evs:
                if not windows or e.ts > windows[-1][0].ts + spec.span:
                    windows.append([])
                windows[-1].append(e)
            for w in windows:
                n = len(w) if spec.ctype == "event_count" else len({agg(x) for x in w})
                if holds(n):
                    fire(w[-1], [x.uid for x in w])
    return sorted(out)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), stream=events)
@example(  # found by a longer run: an ordered chain's evidence was not capped at max_evidence
    spec=Spec(
        ctype="temporal_ordered", rules=["S0", "S0", "S0"], group=False, span=1, bounds={},
        tolerance=0.0, max_evidence=2,
    ),
    stream=[(0, "S0", "10.0.0.1", 22)] * 3,
)  # fmt: skip
def test_correlator_matches_brute_force(
    spec: Spec, stream: list[tuple[int, str, str, int]]
) -> None:
    load = compile_correlations([(None, document(spec))])
    assert load.errors == []
    records = [
        conn(ts=T0 + t, conn_state=state, orig_h=src, resp_p=port, uid=f"U{i}")
        for i, (t, state, src, port) in enumerate(stream)
    ]
    correlator = Correlator(
        load.rules,
        CorrelationSettings(tolerance=spec.tolerance, max_evidence=spec.max_evidence),
        clock=lambda: T0,
    )
    alerts = [a for rec in records for a in correlator.process("t", rec)]
    alerts += correlator.flush("t")
    got = sorted((a.dedup_key, a.ts, a.uid, tuple(a.uids)) for a in alerts)
    assert got == brute_force(spec, records)
    assert correlator.open_groups("t") == 0  # flush leaves no state behind


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.text(max_size=6),
    st.sampled_from(["conn_s0", "conn_rej", "id.orig_h", "5m", "0s", "1x", "gte", "nosuch"]),
)
fields = st.one_of(junk, st.lists(junk, max_size=3), st.dictionaries(st.text(max_size=5), junk))
sections = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(
            st.sampled_from(["event_count", "value_count", "temporal", "temporal_ordered"]),
            st.sampled_from(["value_sum", "value_avg", "value_percentile", "bogus"]),
            junk,
        ),
        "rules": fields,
        "group-by": fields,
        "timespan": st.one_of(st.sampled_from(["10s", "5m", "1h", "0m", "h"]), junk),
        "condition": st.one_of(
            st.dictionaries(
                st.sampled_from(["gt", "gte", "lt", "lte", "eq", "neq", "field", "x"]),
                st.one_of(junk, st.floats(allow_nan=True)),
                max_size=3,
            ),
            junk,
        ),
        "aliases": st.one_of(
            junk, st.dictionaries(st.text(max_size=4), st.dictionaries(st.text(max_size=8), junk))
        ),
        "generate": junk,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.one_of(sections, junk), name=st.one_of(st.none(), st.text(max_size=6)))
def test_random_correlation_documents_compile_or_are_reported(section: Any, name: Any) -> None:
    doc = {"title": "fuzz", "id": RULE_ID, "name": name, "correlation": section}
    load = compile_correlations([(None, yaml.safe_dump_all([doc, *BASE]))])
    assert len(load.rules) + len(load.errors) == 1
    correlator = Correlator(load.rules, clock=lambda: T0)
    for i, state in enumerate(STATES * 3):
        correlator.process("t", conn(ts=T0 + i, conn_state=state, uid=f"U{i}"))
    correlator.flush("t")
