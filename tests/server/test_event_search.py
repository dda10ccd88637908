"""Event search and aggregations on both stores: each filter, pagination, histogram, top-N, and
that no filter or aggregation ever reaches another tenant's rows."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError

from a2z.records import Alert, Batch, Conn, Dns, Http, Record, Severity, Ssl
from a2z.server.context import ServerContext
from a2z.server.events import service as events
from a2z.server.events.search import AddressMatch, ip_key
from tests.server.conftest import TenantFixture, login

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def seed(ctx: ServerContext, tenant: TenantFixture, records: list[Record], seq: int = 1) -> None:
    batch = Batch(
        agent_id=str(tenant.agent_id), boot_epoch=1, seq=seq, sent_at=0.0, records=records
    )
    with ctx.sessions.tenant(tenant.id) as session:
        events.store_batch(session=session, agent_id=tenant.agent_id, batch=batch)


def tup(i: int, orig: str = "10.0.0.5", resp: str = "192.0.2.1", port: int = 443) -> dict[str, Any]:
    return {"uid": f"C{i}", "orig_h": orig, "orig_p": 40000 + i, "resp_h": resp, "resp_p": port}


def mixed() -> list[Record]:
    """Ten records over ten minutes, of several types and addresses."""
    return [
        Dns(ts=T0 + 0, proto="udp", trans_id=1, query="www.example.com", **tup(0, resp="10.0.0.53", port=53)),
        Dns(ts=T0 + 60, proto="udp", trans_id=2, query="mail.example.com", **tup(1, resp="10.0.0.53", port=53)),
        Dns(ts=T0 + 120, proto="udp", trans_id=3, query="evil.test", **tup(2, orig="10.9.8.7", resp="10.0.0.53", port=53)),
        Http(ts=T0 + 180, host="www.example.com", uri="/login?next=%2F", user_agent="curl/8.5", status_code=200, **tup(3, resp="93.184.216.34", port=80)),
        Http(ts=T0 + 240, host="api.example.org", uri="/v1/items", user_agent="Mozilla/5.0 Firefox", status_code=404, **tup(4, resp="93.184.216.34", port=80)),
        Ssl(ts=T0 + 300, server_name="www.example.com", **tup(5, resp="2001:db8::1")),
        Ssl(ts=T0 + 360, server_name="cdn.example.net", **tup(6, orig="2001:db8:0:1::9", resp="2001:db8::2")),
        Conn(ts=T0 + 420, proto="tcp", **tup(7, orig="172.16.1.1")),
        Conn(ts=T0 + 480, proto="tcp", **tup(8, orig="172.16.1.2")),
        Alert(ts=T0 + 540, rule_id="r1", title="Port scan from 10.9.8.7", severity=Severity.HIGH, **tup(9, orig="10.9.8.7")),
    ]  # fmt: skip


def uids(client: TestClient, headers: dict[str, str], query: str) -> list[str]:
    resp = client.get(f"/api/v1/events?{query}", headers=headers)
    assert resp.status_code == 200, resp.text
    return sorted(e["uid"] for e in resp.json()["items"])


@pytest.fixture
def seeded(client: TestClient, ctx: ServerContext, tenant_a: TenantFixture) -> dict[str, str]:
    seed(ctx, tenant_a, mixed())
    return login(client, tenant_a)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"since={T0 + 400:.0f}", ["C7", "C8", "C9"]),
        (f"until={T0 + 120:.0f}", ["C0", "C1"]),
        ("since=2023-11-14T22:15:20Z&until=2023-11-14T22:17:20", ["C2", "C3"]),  # naive = UTC
        ("since=2023-11-14T23:15:20%2B01:00&until=2023-11-14T22:17:19.5Z", ["C2", "C3"]),
        ("type=ssl", ["C5", "C6"]),
        ("uid=C4", ["C4"]),
        ("query=www.example.com", ["C0"]),
        ("query=mail*", ["C1"]),
        ("query=*", ["C0", "C1", "C2"]),
        ("host=api.example.org", ["C4"]),
        ("uri=/login*", ["C3"]),
        ("server_name=cdn.*", ["C6"]),
        ("user_agent=curl*", ["C3"]),
        ("status_code=404", ["C4"]),
        ("resp_p=53", ["C0", "C1", "C2"]),
        ("orig_p=40003", ["C3"]),
        ("orig_h=10.9.8.7", ["C2", "C9"]),
        ("orig_h=172.16.0.0/12", ["C7", "C8"]),
        ("orig_h=172.16.1.2/32", ["C8"]),
        ("orig_h=10.0.0.0/8&type=dns", ["C0", "C1", "C2"]),
        ("resp_h=2001:db8::/32", ["C5", "C6"]),
        ("resp_h=2001:0db8:0000::0001", ["C5"]),  # any spelling of the address
        ("orig_h=2001:db8:0:1::/64", ["C6"]),
        ("resp_h=0.0.0.0/0", ["C0", "C1", "C2", "C3", "C4", "C7", "C8", "C9"]),  # v4 only
        ("q=EXAMPLE.com", ["C0", "C1", "C3", "C5"]),
        ("q=firefox", ["C4"]),
        ("q=port scan", ["C9"]),
        ("q=50%25", []),  # % is literal
        ("q=a_i", []),  # _ is literal
        ("q=example&type=http&status_code=200", ["C3"]),
    ],
)
def test_each_filter(
    client: TestClient, seeded: dict[str, str], query: str, expected: list[str]
) -> None:
    assert uids(client, seeded, query) == expected


def test_prefix_is_literal_and_case_sensitive(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    seed(ctx, tenant_a, [
        Dns(ts=T0, proto="udp", trans_id=1, query="a*b.test", **tup(0)),
        Dns(ts=T0, proto="udp", trans_id=2, query="axb.test", **tup(1)),
        Dns(ts=T0, proto="udp", trans_id=3, query="A_b.test", **tup(2)),
        Dns(ts=T0, proto="udp", trans_id=4, query="a%b.test", **tup(3)),
    ])  # fmt: skip
    headers = login(client, tenant_a)
    assert uids(client, headers, "query=a%2A*") == ["C0"]  # only the trailing * is special
    assert uids(client, headers, "query=a_*") == []
    assert uids(client, headers, "query=A_*") == ["C2"]
    assert uids(client, headers, "query=a%25*") == ["C3"]
    assert uids(client, headers, "query=a") == []


def test_filters_of_one_shape_share_a_statement_but_not_their_values(
    client: TestClient, seeded: dict[str, str]
) -> None:
    """The page statement is built once per shape of filter (service._page) and each request's
    values are bound to it: the same shape asked with other values, one after another and with
    a cursor, answers for its own values."""
    shapes = [
        ("query=mail*", ["C1"], "query=*", ["C0", "C1", "C2"]),
        ("orig_h=10.9.8.7", ["C2", "C9"], "orig_h=172.16.1.1", ["C7"]),
        ("orig_h=172.16.0.0/12", ["C7", "C8"], "orig_h=2001:db8::/32", ["C6"]),
        ("type=dns&resp_p=53", ["C0", "C1", "C2"], "type=conn&resp_p=443", ["C7", "C8"]),
    ]
    for first, first_uids, second, second_uids in shapes:
        for _ in range(2):
            assert uids(client, seeded, first) == first_uids, first
            assert uids(client, seeded, second) == second_uids, second
    # With a cursor: the first page of one value, then the rest of another value's pages.
    first = client.get("/api/v1/events?limit=1&query=*", headers=seeded).json()
    assert [e["uid"] for e in first["items"]] == ["C2"]
    rest = client.get(
        f"/api/v1/events?limit=5&query=www*&cursor={first['next_cursor']}", headers=seeded
    ).json()
    assert [e["uid"] for e in rest["items"]] == ["C0"]  # www.*, older than C2's time


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "since=2023-13-01",
        "since=10&until=5",
        "orig_h=10.0.0.300",
        "orig_h=10.0.0.0/33",
        "resp_h=example.com",
        "resp_p=70000",
        "status_code=1",
        "q=x",
        "query=a%00b",
        "uid=" + "x" * 65,
        "type=DNS",
        "tyep=dns",
        "limit=0",
    ],
)
def test_bad_parameters_are_422_problems(
    client: TestClient, seeded: dict[str, str], query: str
) -> None:
    for path in ("/api/v1/events", "/api/v1/events/histogram", "/api/v1/events/top"):
        if query == "limit=0" and path != "/api/v1/events":
            continue
        resp = client.get(f"{path}?{query}", headers=seeded)
        assert resp.status_code == 422, (path, query, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"


def test_filtered_pages_are_stable_and_complete(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    for seq in (1, 2, 3):  # equal timestamps across batches: the cursor must break ties
        seed(ctx, tenant_a, [
            Dns(ts=T0 + i % 4, proto="udp", trans_id=i, query=f"h{i % 2}.test",
                **tup(i + 100 * seq, resp="10.0.0.53", port=53))
            for i in range(20)
        ], seq=seq)  # fmt: skip
    headers = login(client, tenant_a)
    seen: list[dict[str, Any]] = []
    url = "/api/v1/events?limit=7&query=h1.test&resp_h=10.0.0.0/24"
    while url:
        page = client.get(url, headers=headers).json()
        seen += page["items"]
        # Rows arriving between pages are newer than the cursor: they do not shift the pages.
        seed(ctx, tenant_a, [Dns(ts=T0 + 10 + len(seen), proto="udp", trans_id=1, query="h1.test",
                                 **tup(9000 + len(seen), resp="10.0.0.53", port=53))],
             seq=1000 + len(seen))  # fmt: skip
        nxt = page["next_cursor"]
        url = f"/api/v1/events?limit=7&query=h1.test&resp_h=10.0.0.0/24&cursor={nxt}" if nxt else ""
    assert len(seen) == 30
    assert len({e["uid"] for e in seen}) == 30
    assert all(e["query"] == "h1.test" for e in seen)
    keys = [e["ts"] for e in seen]
    assert keys == sorted(keys, reverse=True)


def test_histogram_counts_per_bucket(client: TestClient, seeded: dict[str, str]) -> None:
    resp = client.get("/api/v1/events/histogram?bucket=180", headers=seeded)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["bucket"] == 180
    # T0 is a multiple of 20 but not of 180: buckets are aligned to the epoch, not to T0.
    start = (T0 // 180) * 180
    expected: dict[float, int] = {}
    for rec in mixed():
        slot = (rec.ts // 180) * 180
        expected[slot] = expected.get(slot, 0) + 1
    assert {b["start"]: b["count"] for b in body["items"]} == expected
    assert body["items"][0]["start"] == start
    assert [b["start"] for b in body["items"]] == sorted(expected)
    assert sum(b["count"] for b in body["items"]) == 10


def test_histogram_with_filters(client: TestClient, seeded: dict[str, str]) -> None:
    body = client.get("/api/v1/events/histogram?bucket=3600&type=dns", headers=seeded).json()
    assert [b["count"] for b in body["items"]] == [3]
    since = f"since={T0 + 60:.0f}&until={T0 + 300:.0f}"
    body = client.get(f"/api/v1/events/histogram?bucket=60&{since}", headers=seeded).json()
    stamps = [T0 + 60, T0 + 120, T0 + 180, T0 + 240]  # buckets are aligned to the epoch
    assert [(b["start"], b["count"]) for b in body["items"]] == [
        ((t // 60) * 60, 1) for t in stamps
    ]


def test_histogram_refuses_too_many_buckets(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from a2z.server.events import search

    monkeypatch.setattr(search, "MAX_BUCKETS", 3)
    seed(ctx, tenant_a, mixed())
    headers = login(client, tenant_a)
    assert client.get("/api/v1/events/histogram?bucket=60", headers=headers).status_code == 422
    assert client.get("/api/v1/events/histogram?bucket=600", headers=headers).status_code == 200


def test_top_values(client: TestClient, seeded: dict[str, str]) -> None:
    def top(query: str) -> list[tuple[Any, int]]:
        resp = client.get(f"/api/v1/events/top?{query}", headers=seeded)
        assert resp.status_code == 200, resp.text
        return [(t["value"], t["count"]) for t in resp.json()["items"]]

    assert top("") == [("dns", 3), ("conn", 2), ("http", 2), ("ssl", 2), ("alert", 1)]
    assert top("field=type&n=2") == [("dns", 3), ("conn", 2)]
    assert top("field=resp_h&n=2") == [("192.0.2.1", 3), ("10.0.0.53", 3)][::-1]
    assert top("field=resp_p") == [(443, 5), (53, 3), (80, 2)]
    assert top("field=query&q=example") == [("mail.example.com", 1), ("www.example.com", 1)]
    assert top("field=status_code") == [(200, 1), (404, 1)]
    assert top("field=orig_h&orig_h=10.0.0.0/8") == [("10.0.0.5", 5), ("10.9.8.7", 2)]
    assert top("field=title") == [("Port scan from 10.9.8.7", 1)]


def test_search_and_aggregations_never_count_another_tenant(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    seed(ctx, tenant_a, mixed())
    seed(ctx, tenant_b, mixed() + mixed()[:3], seq=1)  # B: same values, more of them
    headers = login(client, tenant_a)
    queries = ["", "type=dns", "q=example", "orig_h=0.0.0.0/0", "resp_h=::/0", "query=*"]
    for query in queries:
        items = client.get(f"/api/v1/events?limit=1000&{query}", headers=headers).json()["items"]
        hist = client.get(f"/api/v1/events/histogram?bucket=86400&{query}", headers=headers)
        total = sum(b["count"] for b in hist.json()["items"])
        assert total == len(items), query
        top = client.get(f"/api/v1/events/top?field=type&n=100&{query}", headers=headers)
        assert sum(t["count"] for t in top.json()["items"]) == len(items), query
    assert (
        sum(t["count"] for t in client.get("/api/v1/events/top", headers=headers).json()["items"])
        == 10
    )
    b_headers = login(client, tenant_b)
    b_top = client.get("/api/v1/events/top", headers=b_headers).json()["items"]
    assert sum(t["count"] for t in b_top) == 13


def test_ip_key_sorts_like_addresses() -> None:
    addresses = ["0.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.1.0", "255.255.255.255"]
    keys = [ip_key(a) for a in addresses]
    assert keys == sorted(k for k in keys if k is not None)
    assert ip_key("not-an-ip") is None
    block = AddressMatch.parse("10.0.0.0/24")
    assert block.low == ip_key("10.0.0.0") and block.high == ip_key("10.0.0.255")
    assert ip_key("::ffff:10.0.0.1") == ip_key("10.0.0.1")  # one host, one key


def test_bulk_write_skips_duplicates_and_fills_search_columns(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    records = mixed()

    def store(batch_records: list[Record], seq: int = 1) -> int:
        batch = Batch(
            agent_id=str(tenant_a.agent_id), boot_epoch=1, seq=seq, sent_at=0.0,
            records=batch_records,
        )  # fmt: skip
        with ctx.sessions.tenant(tenant_a.id) as session:
            return events.store_batch(session=session, agent_id=tenant_a.agent_id, batch=batch)

    assert store(records) == 10
    assert store(records) == 0  # re-sent
    # (epoch, seq) names one batch (the agent's spool re-sends the frame it stored): whatever
    # a second copy carries, the stored batch stands.
    assert store(records[:4]) == 0
    with ctx.sessions.tenant(tenant_a.id) as session:  # twice in one transaction
        for seq in (2, 3):
            batch = Batch(
                agent_id=str(tenant_a.agent_id), boot_epoch=1, seq=seq, sent_at=0.0,
                records=records,
            )  # fmt: skip
            assert (
                events.store_batch(session=session, agent_id=tenant_a.agent_id, batch=batch) == 10
            )
        rows, _ = events.list_recent(session=session, limit=100)
    assert len(rows) == 30
    http = next(r for r in rows if r.uid == "C3")
    assert (http.host, http.uri, http.user_agent, http.status_code) == (
        "www.example.com", "/login?next=%2F", "curl/8.5", 200,
    )  # fmt: skip
    assert http.resp_ip == ip_key("93.184.216.34") and http.query is None
    assert next(r for r in rows if r.uid == "C9").title == "Port scan from 10.9.8.7"


def test_a_value_the_store_refuses_is_a_data_error_on_every_path(
    ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    # The ingest worker dead-letters on DataError; the array insert must raise the same kind
    # as SQLite's INSERT.
    too_long = Conn(ts=T0, proto="tcp", **tup(0, orig="x" * 100))
    batch = Batch(agent_id=str(tenant_a.agent_id), boot_epoch=1, seq=1, sent_at=0.0,
                  records=[too_long])  # fmt: skip
    if ctx.sessions.engine.dialect.name == "sqlite":  # SQLite does not enforce VARCHAR lengths
        with ctx.sessions.tenant(tenant_a.id) as session:
            assert events.store_batch(session=session, agent_id=tenant_a.agent_id, batch=batch)
        return
    with pytest.raises(DataError), ctx.sessions.tenant(tenant_a.id) as session:
        events.store_batch(session=session, agent_id=tenant_a.agent_id, batch=batch)


def test_free_text_page_walks_the_time_index_and_jit_is_off(
    client: TestClient, ctx: ServerContext, tenant_a: TenantFixture
) -> None:
    """PostgreSQL planned a free-text page as a bitmap over all the tenant's rows plus a sort,
    and JIT-compiled it for ~500 ms (docs/adr/0019): pages with ``q`` run without bitmap
    scans, and connections without JIT. The answers are those of any plan."""
    from sqlalchemy import text

    from a2z.server.events import search

    seed(ctx, tenant_a, mixed())
    flt = search.EventFilter(q="example")
    with ctx.sessions.tenant(tenant_a.id) as session:
        search.plan_newest_first(session, flt)
        items, _ = events.list_page_records(session=session, limit=3, flt=flt)
        if ctx.sessions.engine.dialect.name == "postgresql":
            assert session.scalar(text("SHOW jit")) == "off"
            assert session.scalar(text("SHOW enable_bitmapscan")) == "off"
    assert [e["uid"] for e in items] == ["C6", "C5", "C4"]
    if ctx.sessions.engine.dialect.name == "postgresql":
        with ctx.sessions.tenant(tenant_a.id) as session:  # SET LOCAL: this transaction only
            assert session.scalar(text("SHOW enable_bitmapscan")) == "on"
    headers = login(client, tenant_a)
    assert uids(client, headers, "q=example&limit=3") == ["C4", "C5", "C6"]
