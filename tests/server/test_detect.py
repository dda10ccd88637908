"""The detect role: backend detections run on every batch, per tenant, and their alerts land in
the tenant's store exactly once."""

from __future__ import annotations

import asyncio
import random
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from a2z.agent.replay import iter_records
from a2z.records import Batch, Conn, Dns, Http, Record, encode_batch
from a2z.rules.anomaly import RULE_ID, AnomalySettings
from a2z.server.bus.base import Message, events_subject
from a2z.server.context import ServerContext
from a2z.server.detect.detectors import ConnAnomalyDetector, TenantRulesDetector
from a2z.server.detect.worker import DetectWorker, derived_stream_id
from a2z.server.events import scores
from a2z.server.events import service as events
from a2z.server.events.models import Event
from a2z.server.rules import service as rules
from a2z.server.tenants import service as tenants
from tests.rules.test_anomaly import DETECT, THRESHOLD, usual_traffic
from tests.server.conftest import TenantFixture, login
from tests.server.rule_texts import custom_rule

SETTINGS = AnomalySettings(warm_up=1_500, window=250, threshold=THRESHOLD)
# A real nmap SYN scan (bench/data/detect): its source stands out once the model is warm.
SCANNER = "10.77.0.1"
SCAN: list[Record] = [
    r
    for r in iter_records(DETECT / "nmap-syn-scan.pcap")
    if isinstance(r, Conn) and r.orig_h == SCANNER  # the scan itself, not neighbour discovery
]


def training() -> list[Record]:
    return usual_traffic(random.Random(7), 3_000)


def message(tenant: TenantFixture, seq: int, records: list[Record]) -> Message:
    batch = Batch(
        agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=0.0, records=list(records)
    )
    return Message(
        subject=events_subject(str(tenant.id), str(tenant.agent_id)),
        payload=encode_batch(batch),
        msg_id=f"{tenant.agent_id}:1:{seq}",
    )


def alerts(client: TestClient, tenant: TenantFixture) -> list[dict[str, object]]:
    resp = client.get("/api/v1/events?type=alert", headers=login(client, tenant))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def alert_rows(ctx: ServerContext, tenant: TenantFixture) -> int:
    with ctx.sessions.tenant(tenant.id) as session:
        return int(session.scalar(select(func.count()).where(Event.path == "alert")) or 0)


def small_worker(ctx: ServerContext) -> DetectWorker:
    detector = ConnAnomalyDetector(SETTINGS, sessions=ctx.sessions)
    return DetectWorker(ctx.sessions, ctx.metrics, [detector])


def test_embedded_server_alerts_on_a_scanning_source(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """Batches go through the server's own bus, as the agent channel sends them."""

    async def send() -> None:
        await ctx.bus.publish(message(tenant_a, 1, training()))
        await ctx.bus.publish(message(tenant_a, 2, SCAN))

    asyncio.run(send())
    found = [a for a in alerts(client, tenant_a) if a["rule_id"] == RULE_ID]
    assert [a["id.orig_h"] for a in found] == [SCANNER]  # one per source per window
    assert isinstance(found[0]["score"], float) and found[0]["score"] >= SETTINGS.threshold
    with ctx.sessions.tenant(tenant_a.id) as session:
        stream = session.scalar(select(Event.agent_id).where(Event.path == "alert"))
    assert stream == derived_stream_id(tenant_a.agent_id)


def test_scores_are_stored_once_and_searchable_per_conn(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    """Every connection scored after warm-up carries its score in the event search, on both
    stores; a redelivered batch keeps its first scores; another tenant sees none of them, not
    even on its own records with the same uids."""
    worker = small_worker(ctx)
    records = training()
    conns = [r for r in records if isinstance(r, Conn)]
    for seq, rec in ((1, records), (2, SCAN)):
        batch = Batch(agent_id=str(tenant_a.agent_id), boot_epoch=1, seq=seq, sent_at=0.0,
                      records=list(rec))  # fmt: skip
        with ctx.sessions.tenant(tenant_a.id) as session:  # what ingest stores
            events.store_batch(session=session, agent_id=tenant_a.agent_id, batch=batch)

    async def run() -> None:
        await worker.handle(message(tenant_a, 1, records))
        await worker.handle(message(tenant_a, 2, SCAN))
        await worker.handle(message(tenant_a, 2, SCAN))  # redelivered

    asyncio.run(run())
    worker.close()
    scan_uids = {c.uid for c in SCAN}
    with ctx.sessions.tenant(tenant_a.id) as session:
        stored = scores.of(session=session, uids={c.uid for c in conns} | scan_uids)
    assert len(stored) == len(conns) - SETTINGS.warm_up + len(SCAN)
    resp = client.get(f"/api/v1/events?type=conn&orig_h={SCANNER}&limit=1000",
                      headers=login(client, tenant_a))  # fmt: skip
    items = resp.json()["items"]
    assert {i["uid"] for i in items} == scan_uids
    assert {i["uid"]: i["anomaly_score"] for i in items} == {u: stored[u] for u in scan_uids}
    assert max(i["anomaly_score"] for i in items) >= SETTINGS.threshold
    with ctx.sessions.tenant(tenant_b.id) as session:
        assert scores.of(session=session, uids=scan_uids) == {}
        b_batch = Batch(agent_id=str(tenant_b.agent_id), boot_epoch=1, seq=1, sent_at=0.0,
                        records=list(SCAN))  # fmt: skip
        events.store_batch(session=session, agent_id=tenant_b.agent_id, batch=b_batch)
    resp = client.get(f"/api/v1/events?type=conn&orig_h={SCANNER}&limit=1000",
                      headers=login(client, tenant_b))  # fmt: skip
    b_items = resp.json()["items"]
    assert {i["uid"] for i in b_items} == scan_uids
    assert not any("anomaly_score" in i for i in b_items)


def test_a_tenants_own_threshold_silences_or_sharpens_its_model(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    with ctx.sessions.system() as session:
        tenants.update_settings(session=session, tenant_id=tenant_a.id,
                                changes={"anomaly_threshold": 1.0})  # fmt: skip
    worker = small_worker(ctx)

    async def run() -> None:
        await worker.handle(message(tenant_a, 1, training()))
        await worker.handle(message(tenant_a, 2, SCAN))

    asyncio.run(run())
    worker.close()
    assert alert_rows(ctx, tenant_a) == 0  # no score reaches 1.0


def test_redelivered_batch_adds_no_alert_rows(ctx: ServerContext, tenant_a: TenantFixture) -> None:
    worker = small_worker(ctx)
    outlier = message(tenant_a, 2, SCAN)

    async def run() -> None:
        await worker.handle(message(tenant_a, 1, training()))
        await worker.handle(outlier)
        await worker.handle(outlier)  # the bus redelivers: the ack was lost

    asyncio.run(run())
    worker.close()
    assert alert_rows(ctx, tenant_a) == 1


def test_one_tenants_traffic_never_trains_anothers_model(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    worker = small_worker(ctx)

    async def run() -> None:
        await worker.handle(message(tenant_a, 1, training()))
        await worker.handle(message(tenant_b, 1, SCAN))  # b's model is still cold

    asyncio.run(run())
    worker.close()
    assert alert_rows(ctx, tenant_b) == 0
    assert alert_rows(ctx, tenant_a) == 0


def test_derived_stream_ids_are_stable_and_distinct_from_the_agent() -> None:
    agent = uuid.UUID("0b7d1c8e-6a57-4c36-9f0e-3b1f5c2d7a90")
    assert derived_stream_id(agent) == derived_stream_id(agent) != agent
    assert derived_stream_id(agent) != derived_stream_id(uuid.uuid4())


class Broken:
    name = "broken"

    def prepare(self) -> None:
        pass

    def detect(self, tenant: str, records: object) -> list[object]:
        raise RuntimeError("a bug in one detector")


def test_a_failing_detector_is_counted_and_the_others_still_run(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    anomaly = ConnAnomalyDetector(SETTINGS)
    worker = DetectWorker(ctx.sessions, ctx.metrics, [Broken(), anomaly])  # type: ignore[list-item]

    async def run() -> None:
        await worker.handle(message(tenant_a, 1, training()))
        await worker.handle(message(tenant_a, 2, SCAN))

    asyncio.run(run())
    worker.close()
    assert ctx.metrics.detect_errors.labels(detector="broken")._value.get() == 2
    assert alert_rows(ctx, tenant_a) == 1


def dns(uid: str, query: str) -> Dns:
    return Dns(
        ts=1_700_000_000.0, uid=uid, orig_h="10.0.0.5", orig_p=5353, resp_h="10.0.0.53",
        resp_p=53, proto="udp", trans_id=1, query=query,
    )  # fmt: skip


def test_tenant_rules_run_in_the_backend_and_edits_take_effect(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    """A tenant's custom rule raises alerts on its own records only, and disabling it stops
    them once the detector looks again (``refresh_s``)."""
    now = [0.0]
    detector = TenantRulesDetector(
        ctx.sessions, ctx.rules_catalog, ctx.metrics, refresh_s=30.0, clock=lambda: now[0]
    )
    with ctx.sessions.tenant(tenant_a.id) as session:
        rule = rules.create(
            session=session, catalog=ctx.rules_catalog,
            checked=rules.check(custom_rule(query="evil.test")), enabled=True, actor="t",
        )  # fmt: skip
    hit, miss = dns("Chit", "evil.test"), dns("Cmiss", "good.test")

    found = detector.detect(str(tenant_a.id), [hit, miss])
    assert [(a.rule_id, a.uids) for a in found] == [(str(rule.id), ["Chit"])]
    assert detector.detect(str(tenant_b.id), [hit]) == []  # b has no such rule

    with ctx.sessions.tenant(tenant_a.id) as session:
        stored = rules.get(session=session, rule_id=rule.id)
        assert stored is not None
        rules.set_enabled(session=session, rule=stored, enabled=False)
    assert len(detector.detect(str(tenant_a.id), [hit])) == 1  # cached until refresh_s
    now[0] = 31.0
    assert detector.detect(str(tenant_a.id), [hit]) == []


def test_shipped_rules_raise_backend_alerts_through_the_bus(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """The embedded server runs the shipped Sigma rules on what agents send."""
    scanner = Http(
        ts=1_700_000_000.0, uid="Cnikto", orig_h="10.0.0.5", orig_p=40000, resp_h="10.0.0.80",
        resp_p=80, method="GET", host="victim", uri="/", user_agent="Mozilla/5.00 (Nikto/2.1.6)",
    )  # fmt: skip
    asyncio.run(ctx.bus.publish(message(tenant_a, 1, [scanner])))  # type: ignore[list-item]
    shipped = {r.rule_id for r in ctx.rules_catalog}
    found = [a for a in alerts(client, tenant_a) if a["rule_id"] in shipped]
    assert found and all(a["uids"] == ["Cnikto"] for a in found)


def test_a_rule_the_edge_already_alerted_on_is_not_alerted_again(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """An agent running the tenant's rules (ADR 13) ships its alert after the record: the
    backend does not raise the same rule on the same record again."""
    detector = TenantRulesDetector(ctx.sessions, ctx.rules_catalog, ctx.metrics)
    with ctx.sessions.tenant(tenant_a.id) as session:
        rule = rules.create(
            session=session, catalog=ctx.rules_catalog,
            checked=rules.check(custom_rule(query="evil.test")), enabled=True, actor="t",
        )  # fmt: skip
    hit, other = dns("Chit", "evil.test"), dns("Cother", "evil.test")
    (edge,) = detector.detect(str(tenant_a.id), [hit])  # what the edge would have raised
    assert edge.rule_id == str(rule.id)
    found = detector.detect(str(tenant_a.id), [hit, edge, other])
    assert [(a.rule_id, a.uids) for a in found] == [(str(rule.id), ["Cother"])]
