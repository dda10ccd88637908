"""Turning a protocol off in the configuration turns its analyzer off (no parsing), and back on
without a new pipeline: the switch the control path flips while the capture runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2z.agent.control import AgentRuntime
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols import session
from a2z.agent.protocols.analyzer import AnalyzerSwitch, ProtocolConfig
from a2z.agent.protocols.http import HttpAnalyzer
from a2z.records import AgentSettings, Conn, Dns, Http, Record
from tests.agent.protocol_builder import TcpConversation, dns_message, dns_name, udp_exchange

REQUEST = b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class CountingHttp(HttpAnalyzer):
    """The HTTP analyzer, counting how often it is made and fed."""

    made = 0
    fed = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        type(self).made += 1
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def data(self, ts: float, is_orig: bool, data: bytes) -> None:
        type(self).fed += 1
        super().data(ts, is_orig, data)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[CountingHttp]:
    CountingHttp.made = CountingHttp.fed = 0
    monkeypatch.setattr(session, "HttpAnalyzer", CountingHttp)
    return CountingHttp


def http_flow(port: int, ts: float) -> TcpConversation:
    conv = TcpConversation(client=("10.0.0.1", port), ts=ts).handshake()
    return conv.send(True, REQUEST).send(False, RESPONSE).close()


def dns_flow(port: int, ts: float) -> list:  # type: ignore[type-arg]
    query = dns_message(7, questions=[(dns_name("example.com"), 1)])
    reply = dns_message(7, response=True, questions=[(dns_name("example.com"), 1)])
    return udp_exchange([(True, query), (False, reply)], client=("10.0.0.1", port), ts=ts)


def feed(pipeline: Pipeline, packets: list) -> list[Record]:  # type: ignore[type-arg]
    out: list[Record] = []
    for pkt in packets:
        out += pipeline.feed(pkt)
    return out


def test_disabled_analyzer_is_not_invoked_and_reappears_after_re_enable(
    spy: type[CountingHttp], tmp_path: Path
) -> None:
    switch = AnalyzerSwitch()
    runtime = AgentRuntime(state_dir=tmp_path, analyzers=switch)
    pipeline = Pipeline(protocols=ProtocolConfig(analyzers=switch))

    assert runtime.apply(2, AgentSettings(protocols=["dns", "ssl"])).applied
    off = feed(pipeline, http_flow(41000, 1000.0).packets + dns_flow(33000, 1001.0))
    off += pipeline.advance(2000.0)  # past the close delay and the UDP timeout
    assert spy.made == spy.fed == 0  # the HTTP analyzer never ran
    assert switch.skipped == {"http": 1}
    assert not [r for r in off if isinstance(r, Http)]
    (conn,) = [r for r in off if isinstance(r, Conn) and r.resp_p == 80]
    assert conn.service is None  # the conn record stays; only the analysis is gone
    assert [r for r in off if isinstance(r, Dns)]  # dns still on

    # Re-enabled on the same pipeline (the capture never stopped): records come back.
    assert runtime.apply(3, AgentSettings(protocols=["dns", "http", "ssl"])).applied
    on = feed(pipeline, http_flow(41001, 3000.0).packets) + pipeline.flush()
    assert spy.made == 1 and spy.fed >= 2
    (http,) = [r for r in on if isinstance(r, Http)]
    assert (http.uri, http.status_code) == ("/x", 200)


def test_switching_off_mid_flow_drops_the_running_analyzer(spy: type[CountingHttp]) -> None:
    switch = AnalyzerSwitch()
    pipeline = Pipeline(protocols=ProtocolConfig(analyzers=switch))
    conv = TcpConversation(client=("10.0.0.1", 42000)).handshake().send(True, REQUEST)
    feed(pipeline, conv.packets)
    assert spy.fed == 1
    switch.configure({"dns", "ssl"})
    later = len(conv.packets)
    conv.send(False, RESPONSE).send(True, REQUEST).close()
    out = feed(pipeline, conv.packets[later:]) + pipeline.flush()
    assert spy.fed == 1  # nothing more was parsed
    assert switch.skipped == {"http": 1}
    assert not [r for r in out if isinstance(r, Http)]
    assert [r for r in out if isinstance(r, Conn)]


def test_udp_dns_off_skips_the_content_test() -> None:
    switch = AnalyzerSwitch({"http", "ssl"})
    pipeline = Pipeline(protocols=ProtocolConfig(analyzers=switch))
    out = feed(pipeline, dns_flow(33001, 1000.0)) + pipeline.flush()
    assert not [r for r in out if isinstance(r, Dns)]
    assert switch.skipped == {"dns": 1}
    (conn,) = [r for r in out if isinstance(r, Conn)]
    assert conn.service is None
