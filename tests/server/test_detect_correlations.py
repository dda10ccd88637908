"""Sigma correlation rules in the detect role: shipped and tenant correlations raise alerts from
a capture of real tools (nmap, curl: src/a2z/demo/data/attack.pcap), each tenant's windows are
its own, and the state stays within its bounds."""

from __future__ import annotations

import asyncio
import functools
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from a2z.agent.replay import iter_records
from a2z.records import Alert, Batch, Conn, Dns, Record, encode_batch
from a2z.rules.catalog import is_correlation
from a2z.rules.correlation import CorrelationSettings, Correlator, compile_correlations
from a2z.server.bus.base import Message, events_subject
from a2z.server.context import ServerContext
from a2z.server.detect.correlations import CorrelationDetector
from a2z.server.detect.worker import DetectWorker
from a2z.server.events import service as events
from a2z.server.events.models import Event
from tests.agent.test_detect import BENIGN, DATA
from tests.server.conftest import TenantFixture, login

DEMO = Path(__file__).resolve().parents[2] / "src" / "a2z" / "demo" / "data" / "attack.pcap"
SCAN_THEN_CONNECT = "f86440b1-225a-410b-88b0-c7c33cb2756a"
HTTP_BRUTE_FORCE = "0c8f0d1e-6a43-4f7e-9a51-3f0b8f6f2c11"
ATTACKER, VICTIM = "10.66.0.10", "10.66.0.20"


@functools.cache
def attack_records() -> tuple[Record, ...]:
    return tuple(iter_records(DEMO))


def messages(tenant: TenantFixture, records: tuple[Record, ...], size: int = 500) -> list[Message]:
    out = []
    for seq, start in enumerate(range(0, len(records), size), start=1):
        batch = Batch(
            agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=0.0,
            records=list(records[start : start + size]),
        )  # fmt: skip
        out.append(
            Message(
                subject=events_subject(str(tenant.id), str(tenant.agent_id)),
                payload=encode_batch(batch),
                msg_id=f"{tenant.agent_id}:1:{seq}",
            )
        )
    return out


def later(ts: float) -> Dns:
    """A record a minute after ``ts``: the tenant's clock moves past the reordering tolerance."""
    return Dns(
        ts=ts + 60, uid="Clater", orig_h="10.66.0.99", orig_p=5353, resp_h=VICTIM,
        resp_p=53, proto="udp", trans_id=1, query="www.example.test",
    )  # fmt: skip


def stored_alerts(ctx: ServerContext, tenant: TenantFixture) -> list[dict[str, object]]:
    with ctx.sessions.tenant(tenant.id) as session:
        rows = session.scalars(select(Event).where(Event.path == "alert")).all()
        return [events.record_of(row) for row in rows]


def test_detect_worker_raises_shipped_and_tuned_tenant_correlations_from_a_real_capture(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """nmap scans the victim, then curl fetches pages from it: the shipped scan-then-connect
    correlation fires once. The capture has one failed HTTP login before the right password;
    the shipped brute-force rule wants 5, and a tenant override tuned to 1 fires."""
    shipped = ctx.rules_catalog.get(HTTP_BRUTE_FORCE)
    assert shipped is not None and "    gte: 5\n" in shipped.yaml
    tuned = shipped.yaml.replace("    gte: 5\n", "    gte: 1\n")
    headers = login(client, tenant_a)
    resp = client.post("/api/v1/rules", json={"yaml": tuned}, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["kind"] == "override"

    worker = DetectWorker(
        ctx.sessions,
        ctx.metrics,
        [CorrelationDetector(ctx.sessions, ctx.rules_catalog, ctx.metrics)],
    )

    # The tenant's stream goes on after the capture (a minute later): time passes by record
    # timestamps, and matches wait out the reordering tolerance (30 s) before they count.
    after = later(attack_records()[-1].ts)

    async def run() -> None:
        for message in messages(tenant_a, (*attack_records(), after)):
            await worker.handle(message)

    asyncio.run(run())
    worker.close()
    found = {str(a["rule_id"]): a for a in stored_alerts(ctx, tenant_a)}
    assert set(found) == {SCAN_THEN_CONNECT, HTTP_BRUTE_FORCE}
    scan = found[SCAN_THEN_CONNECT]
    assert (scan["id.orig_h"], scan["id.resp_h"], scan["severity"]) == (ATTACKER, VICTIM, "high")
    assert "T1046" in scan["attack"]  # type: ignore[operator]
    brute = found[HTTP_BRUTE_FORCE]
    assert "T1110" in brute["attack"]  # type: ignore[operator]
    # The evidence is the failed login and the accepted one, both for /admin.
    by_uid = {r.uid: r for r in attack_records() if getattr(r, "uri", None) == "/admin"}
    assert set(brute["uids"]) == set(by_uid)  # type: ignore[arg-type]
    assert ctx.metrics.detect_alerts.labels(detector="correlation")._value.get() == 2


def test_shipped_correlations_stay_silent_on_the_benign_captures() -> None:
    from a2z.rules.catalog import shipped_catalog

    load = compile_correlations(
        (r.source, r.yaml) for r in shipped_catalog() if is_correlation(r.yaml)
    )
    assert load.errors == []
    assert len(BENIGN) >= 10
    for name in BENIGN:
        correlator = Correlator(load.rules, CorrelationSettings(max_future=None))
        raised = [a for r in iter_records(DATA / name) for a in correlator.process("t", r)]
        raised += correlator.flush("t")
        assert raised == [], name


def test_correlation_state_is_per_tenant(
    ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    """60 refused ports then a connection with data: a scan for one tenant. Split between two
    tenants (30 each, both see the connection), neither has one: windows are never shared."""
    conns = [r for r in attack_records() if isinstance(r, Conn) and r.orig_h == ATTACKER]
    refused = [c for c in conns if c.conn_state == "REJ"][:60]
    used = [c for c in conns if c.conn_state == "SF" and c.proto == "tcp" and c.resp_bytes]
    assert len(refused) == 60 and used
    follow: list[Record] = [c for c in used if c.ts > refused[-1].ts][:1]
    assert follow
    follow.append(later(follow[0].ts))

    def detect(
        detector: CorrelationDetector, tenant: TenantFixture, rs: list[Conn] | list[Record]
    ) -> list[Alert]:
        return detector.detect(str(tenant.id), rs)

    split = CorrelationDetector(ctx.sessions, ctx.rules_catalog, ctx.metrics)
    raised = detect(split, tenant_a, refused[:30]) + detect(split, tenant_b, refused[30:])
    raised += detect(split, tenant_a, follow) + detect(split, tenant_b, follow)
    assert raised == []
    assert split.open_groups(str(tenant_a.id)) > 0 and split.open_groups(str(tenant_b.id)) > 0

    whole = CorrelationDetector(ctx.sessions, ctx.rules_catalog, ctx.metrics)
    alerts = detect(whole, tenant_a, refused) + detect(whole, tenant_a, follow)
    assert [a.rule_id for a in alerts] == [SCAN_THEN_CONNECT]


def test_correlation_state_is_bounded_in_groups_and_tenants(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    detector = CorrelationDetector(
        ctx.sessions, ctx.rules_catalog, ctx.metrics,
        settings=CorrelationSettings(max_groups=10, max_future=None), max_tenants=2,
    )  # fmt: skip
    template = next(r for r in attack_records() if isinstance(r, Conn) and r.conn_state == "REJ")
    # 500 scanning sources: one group each, far past the cap.
    flood = [
        Conn(
            ts=template.ts + i * 0.001,
            uid=f"Cflood{i}",
            orig_h=f"10.9.{i // 250}.{i % 250}",
            orig_p=40000,
            resp_h=VICTIM,
            resp_p=1 + i % 100,
            proto="tcp",
            conn_state="REJ",
        )
        for i in range(500)
    ]
    assert detector.detect(str(tenant_a.id), [*flood, later(flood[-1].ts)]) == []
    correlations = 4  # shipped: two chains of two
    assert detector.open_groups(str(tenant_a.id)) <= 10 * correlations
    assert detector.stats(str(tenant_a.id)).evicted >= 490
    evicted = ctx.metrics.detect_correlation_dropped.labels("evicted")._value.get()
    assert evicted == detector.stats(str(tenant_a.id)).evicted
    for _ in range(3):  # more tenants than the cap: the least recently seen is dropped
        detector.detect(str(uuid.uuid4()), flood[:1])
    assert detector.tenants == 2
    assert detector.open_groups(str(tenant_a.id)) == 0
