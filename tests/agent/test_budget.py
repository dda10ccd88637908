"""The resource budget: shedding in steps with hysteresis, driven by injected measurements."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from a2z.agent.budget import BudgetPolicy, ResourceGovernor, Usage
from a2z.agent.control import AgentRuntime
from a2z.agent.flows.table import FlowConfig
from a2z.agent.heartbeat import HeartbeatSource
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols.analyzer import AnalyzerSwitch, ProtocolConfig
from a2z.records import AgentSettings, Conn, Dns, Heartbeat, Http, Record
from tests.agent.packet_builder import eth, ipv4, raw, udp
from tests.agent.protocol_builder import TcpConversation, dns_message, dns_name, udp_exchange

MiB = 1 << 20
POLICY = BudgetPolicy(trip_samples=2, clear_samples=3, release_ratio=0.8, min_flows=16)


class Meter:
    """A scripted UsageSource: each call returns the next value set."""

    def __init__(self) -> None:
        self.cpu = 10.0
        self.rss = 100 * MiB

    def __call__(self) -> Usage:
        return Usage(self.cpu, self.rss)


def governor(meter: Meter, max_flows: int = 64) -> ResourceGovernor:
    gov = ResourceGovernor(AnalyzerSwitch(), meter, POLICY, max_flows=max_flows)
    gov.set_budget(50.0, 200 * MiB)
    return gov


def samples(gov: ResourceGovernor, n: int) -> None:
    for _ in range(n):
        gov.sample()


def test_cpu_over_budget_sheds_http_and_tls_then_dns_and_returns_with_hysteresis() -> None:
    meter = Meter()
    gov = governor(meter)
    meter.cpu = 80.0
    gov.sample()
    assert gov.cpu_level == 0  # one sample over is a blip, not load
    gov.sample()
    assert gov.cpu_level == 1 and gov.analyzers.shedding == {"http", "ssl"}
    samples(gov, 2)
    assert gov.cpu_level == 2 and gov.analyzers.shedding == {"dns", "ftp", "http", "ssl"}
    samples(gov, 4)
    assert gov.cpu_level == 2  # the top step: nothing more to shed
    meter.cpu = 45.0  # under the budget but above the release mark (40): stay
    samples(gov, 10)
    assert gov.cpu_level == 2
    meter.cpu = 30.0
    samples(gov, 2)
    assert gov.cpu_level == 2
    gov.sample()
    assert gov.cpu_level == 1 and gov.analyzers.shedding == {"http", "ssl"}
    samples(gov, 3)
    assert gov.cpu_level == 0 and gov.analyzers.shedding == frozenset()
    report = gov.report()
    assert (report.state, report.cpu_sheds, report.cpu_percent) == ("normal", 2, 30.0)


def test_alternating_load_does_not_flap() -> None:
    meter = Meter()
    gov = governor(meter)
    for cpu in [80.0, 30.0] * 10:
        meter.cpu = cpu
        gov.sample()
    assert gov.cpu_level == 0 and gov.cpu_sheds == 0


def http_flow(port: int, ts: float) -> list:  # type: ignore[type-arg]
    conv = TcpConversation(client=("10.0.0.1", port), ts=ts).handshake()
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    return conv.send(True, request).send(False, b"HTTP/1.1 204 No Content\r\n\r\n").close().packets


def dns_flow(port: int, ts: float) -> list:  # type: ignore[type-arg]
    q = dns_message(9, questions=[(dns_name("a.example"), 1)])
    r = dns_message(9, response=True, questions=[(dns_name("a.example"), 1)])
    return udp_exchange([(True, q), (False, r)], client=("10.0.0.1", port), ts=ts)


def run(pipeline: Pipeline, packets: list, until: float) -> list[Record]:  # type: ignore[type-arg]
    out: list[Record] = []
    for pkt in packets:
        out += pipeline.feed(pkt)
    return out + pipeline.advance(until)


def test_cpu_shedding_keeps_conn_records_and_counts_what_was_not_analysed() -> None:
    meter = Meter()
    gov = governor(meter)
    pipeline = Pipeline(protocols=ProtocolConfig(analyzers=gov.analyzers))
    meter.cpu = 90.0
    samples(gov, 2)  # level 1: HTTP and TLS shed, DNS still analysed
    out = run(pipeline, http_flow(40000, 1000.0) + dns_flow(33000, 1000.5), 2000.0)
    assert not [r for r in out if isinstance(r, Http)]
    assert [r for r in out if isinstance(r, Dns)]
    assert len([r for r in out if isinstance(r, Conn)]) == 2
    assert gov.report().shed_flows == 1 and gov.report().shed_protocols == ["http", "ssl"]
    meter.cpu = 10.0
    samples(gov, 3)
    out = run(pipeline, http_flow(40001, 3000.0), 4000.0)
    assert [r for r in out if isinstance(r, Http)]  # analysis is back


def udp_flows(n: int, ts: float) -> Iterator:  # type: ignore[type-arg]
    for i in range(n):
        frame = eth(ipv4("10.1.0.1", "10.2.0.1", 17, udp(20000 + i, 9999, b"x")))
        yield raw(ts + i * 0.001, frame)


def test_memory_over_budget_halves_the_flow_table_and_evicts_oldest_flows() -> None:
    meter = Meter()
    gov = governor(meter, max_flows=64)
    pipeline = Pipeline(FlowConfig(max_flows=64), protocols=ProtocolConfig(analyzers=gov.analyzers))
    run(pipeline, list(udp_flows(60, 1000.0)), 1000.1)
    assert len(pipeline.table) == 60
    meter.rss = 300 * MiB
    samples(gov, 2)
    assert (gov.memory_level, gov.max_flows) == (1, 32)
    assert gov.analyzers.shedding == {"dns", "ftp", "http", "ssl"}  # analysis buffers go too
    gov.enforce(pipeline.table)
    evicted = pipeline.advance(1000.2)
    conns = [r for r in evicted if isinstance(r, Conn)]
    assert len(conns) == 28 and len(pipeline.table) == 32
    assert {c.orig_p for c in conns} == set(range(20000, 20028))  # least recently active first
    samples(gov, 20)
    assert (gov.memory_level, gov.max_flows) == (2, 16)  # the floor
    gov.enforce(pipeline.table)
    report = gov.report()
    assert (report.state, report.memory_level, report.evicted_flows) == ("shedding", 2, 44)
    assert report.memory_sheds == 2

    meter.rss = 100 * MiB  # well under: one step back per clear_samples
    samples(gov, 3)
    assert (gov.memory_level, gov.max_flows) == (1, 32)
    samples(gov, 3)
    gov.enforce(pipeline.table)
    assert (gov.memory_level, pipeline.table.config.max_flows) == (0, 64)
    assert gov.analyzers.shedding == frozenset()


def test_a_pushed_budget_moves_the_thresholds_and_heartbeats_report_the_state(
    tmp_path: Path,
) -> None:
    meter = Meter()
    gov = governor(meter)
    runtime = AgentRuntime(state_dir=tmp_path, analyzers=gov.analyzers, governor=gov)
    meter.cpu = 60.0
    samples(gov, 4)
    assert gov.cpu_level == 2
    assert runtime.apply(5, AgentSettings(cpu_percent_max=400.0, rss_max_bytes=1 << 30)).applied
    assert (gov.cpu_percent_max, gov.rss_max_bytes) == (400.0, 1 << 30)
    samples(gov, 3)
    assert gov.cpu_level == 1  # 60 is well under 400 now
    source = HeartbeatSource(records_acked=lambda: 0, reconnects=lambda: 0, budget=gov.report)
    beat = msgspec.json.decode(source(), type=Heartbeat)
    assert beat.budget is not None
    assert (beat.budget.state, beat.budget.cpu_level, beat.budget.cpu_sheds) == ("shedding", 1, 2)
