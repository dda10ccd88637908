"""/metrics: every ingest stage reports records in, out, dropped and throttled, batch sizes,
latencies and lag, in the Prometheus text format."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from a2z.agent.identity import IdentityFiles
from a2z.server.context import ServerContext
from tests.server.conftest import TenantFixture, enrolled
from tests.server.test_channel import exchange, frame
from tests.server.test_quotas import set_limits


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_follow_records_through_every_stage(
    client: TestClient,
    ctx: ServerContext,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    gateway: str,
    tmp_path: Path,
) -> None:
    config = enrolled(ctx, tenant_a, gateway, tmp_path)
    files = IdentityFiles(Path(config.identity_dir))
    frames = [frame(config.agent_id, 1, n=4), frame(config.agent_id, 1, n=4), b"junk"]
    exchange(f"{gateway}/channel", files, frames)
    # The first batch empties the bucket; the second needs 10 s of refill, far more than a
    # loaded machine takes between two posts (with a burst of 2 it once refilled in between).
    set_limits(ctx, tenant_b, events_per_second=1, burst_events=10)
    token = {"Authorization": f"Bearer {tenant_b.agent_token}"}
    assert client.post("/api/v1/events/batches", content=frame(str(tenant_b.agent_id), 1, n=10),
                       headers=token).status_code == 202  # fmt: skip
    assert client.post("/api/v1/events/batches", content=frame(str(tenant_b.agent_id), 2, n=10),
                       headers=token).status_code == 429  # fmt: skip

    got = samples(client)

    def value(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    # gateway: 8 records in (one batch twice), 8 out to the bus, one undecodable frame dropped
    assert value("a2z_events_in_total", stage="gateway") == 8
    assert value("a2z_events_out_total", stage="gateway") == 8
    assert value("a2z_events_dropped_total", stage="gateway", reason="wire") == 1
    # http: 20 in, 10 out, 10 throttled for the rate
    assert value("a2z_events_in_total", stage="http") == 20
    assert value("a2z_events_out_total", stage="http") == 10
    assert value("a2z_events_throttled_total", stage="http", limit="rate") == 10
    # ingest (in-process bus): everything published was written; the re-sent batch collapsed
    assert value("a2z_events_in_total", stage="ingest") == 18
    assert value("a2z_events_out_total", stage="ingest") == 18
    assert value("a2z_events_stored_total") == 14 and value("a2z_events_duplicate_total") == 4
    assert value("a2z_ingest_batch_records_count") == 3
    assert value("a2z_ingest_lag_seconds_count") == 3
    assert value("a2z_publish_seconds_count", stage="gateway") == 2
    assert value("a2z_ingest_write_seconds_count") == 3
