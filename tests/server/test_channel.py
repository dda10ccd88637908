"""The agent channel: authentication, acks after storage, de-duplication, bad frames."""

from __future__ import annotations

import msgspec
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from a2z.records import Batch, Conn, encode_batch
from a2z.server.context import ServerContext
from tests.server.conftest import TenantFixture, login

CHANNEL = "/api/v1/agent/channel"


def conn(i: int) -> Conn:
    return Conn(
        ts=1_700_000_000.0 + i, uid=f"C{i}", orig_h="10.0.0.1", orig_p=40000 + i,
        resp_h="10.0.0.2", resp_p=80, proto="tcp", conn_state="SF",
    )  # fmt: skip


def batch(tenant: TenantFixture, seq: int, n: int = 3, epoch: int = 1) -> Batch:
    records = [conn(seq * 100 + i) for i in range(n)]
    return Batch(
        agent_id=str(tenant.agent_id), boot_epoch=epoch, seq=seq, sent_at=0.0, records=records
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def events(client: TestClient, tenant: TenantFixture) -> list[dict[str, object]]:
    items: list[dict[str, object]] = client.get(
        "/api/v1/events?limit=1000", headers=login(client, tenant)
    ).json()["items"]
    return items


def test_batch_is_acked_and_stored(client: TestClient, tenant_a: TenantFixture) -> None:
    with client.websocket_connect(CHANNEL, headers=bearer(tenant_a.agent_token)) as ws:
        ws.send_bytes(encode_batch(batch(tenant_a, seq=1)))
        assert msgspec.json.decode(ws.receive_text()) == {"ack": 1, "epoch": 1}
    stored = events(client, tenant_a)
    assert sorted(e["uid"] for e in stored) == ["C100", "C101", "C102"]


def test_resent_batch_adds_no_rows(
    client: TestClient, tenant_a: TenantFixture, ctx: ServerContext
) -> None:
    frame = encode_batch(batch(tenant_a, seq=7))
    for _ in range(2):  # same batch on two connections, as after a lost ack
        with client.websocket_connect(CHANNEL, headers=bearer(tenant_a.agent_token)) as ws:
            ws.send_bytes(frame)
            ws.send_bytes(frame)
            assert msgspec.json.decode(ws.receive_text())["ack"] == 7
            assert msgspec.json.decode(ws.receive_text())["ack"] == 7
    assert len(events(client, tenant_a)) == 3
    assert ctx.metrics.events_duplicate._value.get() == 9


@pytest.mark.parametrize("token", ["", "a2z_nothere_secret", "not-a-jwt"])
def test_bad_credential_is_refused_at_upgrade(client: TestClient, token: str) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect(CHANNEL, headers=bearer(token)),
    ):
        pass
    assert info.value.code == 1008


def test_human_token_cannot_stream(client: TestClient, tenant_a: TenantFixture) -> None:
    headers = login(client, tenant_a)
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(CHANNEL, headers=headers):
        pass


def test_garbage_frame_is_refused_and_stream_continues(
    client: TestClient, tenant_a: TenantFixture, ctx: ServerContext
) -> None:
    with client.websocket_connect(CHANNEL, headers=bearer(tenant_a.agent_token)) as ws:
        ws.send_bytes(b"\x28\xb5\x2f\xfd garbage")
        reply = msgspec.json.decode(ws.receive_text())
        assert "ack" not in reply
        assert "zstd" in reply["error"]
        ws.send_bytes(encode_batch(batch(tenant_a, seq=2)))
        assert msgspec.json.decode(ws.receive_text())["ack"] == 2
    assert len(events(client, tenant_a)) == 3
    assert ctx.metrics.wire_errors.labels("decode")._value.get() == 1


def test_batch_naming_another_agent_is_refused(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    spoofed = batch(tenant_b, seq=1)  # tenant B's agent id, sent with A's credential
    with client.websocket_connect(CHANNEL, headers=bearer(tenant_a.agent_token)) as ws:
        ws.send_bytes(encode_batch(spoofed))
        reply = msgspec.json.decode(ws.receive_text())
    assert reply["nack"] == 1
    assert "retry" not in reply
    assert events(client, tenant_a) == []
    assert events(client, tenant_b) == []
