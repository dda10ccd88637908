"""The flow table's compact layout: recency list, uids drawn when read, history in the flow."""

from __future__ import annotations

import gc
import re

from a2z.agent.flows import FlowConfig, FlowTable, format_addr
from a2z.agent.flows.table import UidSource
from a2z.agent.gc_policy import YOUNG_THRESHOLD, tune_gc

A = bytes([10, 0, 0, 1])
B = bytes([10, 0, 0, 2])


def _udp(table: FlowTable, ts: float, sport: int) -> None:
    table.add_udp(ts, A, sport, B, 53, 10, 38)


def test_a_flow_seen_again_is_evicted_after_the_flows_that_were_not() -> None:
    table = FlowTable(FlowConfig(max_flows=3))
    for i, port in enumerate([1, 2, 3, 1, 4, 5]):
        _udp(table, float(i), port)
    assert [flow.orig_p for flow in table.pop_ended()] == [2, 3]
    assert table.evictions == 2
    assert [flow.orig_p for flow in table.flush()] == [1, 4, 5]  # least recently active first


def test_flush_after_flows_ended_in_the_middle_of_the_table_keeps_the_order() -> None:
    table = FlowTable(FlowConfig(max_flows=10, udp_timeout=5.0))
    _udp(table, 0.0, 1)
    _udp(table, 1.0, 2)
    _udp(table, 4.0, 3)
    _udp(table, 4.5, 1)  # port 1 again: now the newest
    _udp(table, 6.5, 4)  # port 2 timed out (idle since 1.0)
    assert [flow.orig_p for flow in table.pop_ended()] == [2]
    assert [flow.orig_p for flow in table.flush()] == [3, 1, 4]
    assert len(table) == 0


def test_uid_is_drawn_when_first_read_and_then_kept() -> None:
    table = FlowTable(FlowConfig(uid_seed=1))
    flow = table.add_segment(1.0, A, B, 1000, 80, 5, 0, 0x02, 1024, 0, 40)
    assert flow._uid == ""  # a flow nobody asked about holds no uid string
    uid = flow.uid
    assert re.fullmatch(r"C[0-9A-Za-z]{17}", uid)
    assert flow.uid is uid


def test_uid_source_gives_distinct_reproducible_uids() -> None:
    first = [UidSource(9).draw() for _ in range(3)]
    source = UidSource(9)
    many = [source.draw() for _ in range(1000)]  # several refills of the byte pool
    assert len(set(many)) == 1000
    assert many[0] == first[0]
    assert all(re.fullmatch(r"C[0-9A-Za-z]{17}", uid) for uid in many)


def test_history_letters_live_in_the_flow() -> None:
    table = FlowTable()
    flow = table.add_segment(1.0, A, B, 1000, 80, 5, 0, 0x02, 1024, 0, 40)
    assert flow.history is flow
    assert flow.letters == "S"


def test_a_tcp_flow_holds_both_endpoints_itself() -> None:
    # One object per TCP flow (ADR 0006, update 4): the endpoint state is the flow's own
    # fields, not a TcpSession with two TcpEndpoint objects hanging off it.
    table = FlowTable()
    flow = table.add_segment(1.0, A, B, 1000, 80, 5, 0, 0x02, 1024, 0, 40)  # SYN
    table.add_segment(1.1, B, A, 80, 1000, 70, 6, 0x12, 1024, 0, 40)  # SYN-ACK
    own = [obj for obj in gc.get_referents(flow) if type(obj).__module__.startswith("a2z.")]
    assert {type(obj).__name__ for obj in own} <= {"UidSource"}  # the table's, shared
    assert (flow.o_state, flow.r_state, flow.letters) == (4, 4, "Sh")  # both ESTABLISHED


def test_format_addr_gives_the_same_text_when_cached() -> None:
    v6 = bytes(15) + b"\x01"
    assert [format_addr(A), format_addr(A), format_addr(v6), format_addr(v6)] == [
        "10.0.0.1",
        "10.0.0.1",
        "::1",
        "::1",
    ]
    for i in range(5000):  # past the cache's size: it starts over, answers stay right
        assert format_addr(i.to_bytes(4, "big")) == f"0.0.{i >> 8}.{i & 0xFF}"


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
