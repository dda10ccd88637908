"""Conn records against Zeek's own btest baselines for the same traces.

Zeek's baselines in the corpus that carry conn-level facts: core.q-in-q/conn.log (full conn
records), core.icmp.icmp-events and core.connection_status_update (ICMP connection ids), and
core.ipv6-frag/dns.log (uids per UDP 5-tuple). None covers TCP conn_state; that is checked
scenario by scenario in test_conn_state.py against the rules of Zeek's conn/main.zeek.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from a2z.agent.replay import iter_records
from a2z.records import Conn, Weird

DATA = Path(__file__).resolve().parents[1] / "data"
BASELINES = DATA / "zeek-baselines"

Tuple4 = tuple[str, int, str, int]


def _conns(name: str) -> list[Conn]:
    return [r for r in iter_records(DATA / name) if isinstance(r, Conn)]


def _read_zeek_log(path: Path) -> list[dict[str, str]]:
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def _optional_int(value: str) -> int | None:
    return None if value == "-" else int(value)


def test_qinq_conn_records_match_zeek_conn_log_field_by_field() -> None:
    expected = {
        (row["id.orig_h"], int(row["id.orig_p"]), row["id.resp_h"], int(row["id.resp_p"])): row
        for row in _read_zeek_log(BASELINES / "core.q-in-q.conn.log")
    }
    ours = {(c.orig_h, c.orig_p, c.resp_h, c.resp_p): c for c in _conns("q-in-q.pcap")}
    assert ours.keys() == expected.keys()
    for key, row in expected.items():
        conn = ours[key]
        assert conn.proto == row["proto"]
        assert conn.conn_state == row["conn_state"]
        assert conn.history == row["history"]
        assert conn.orig_pkts == int(row["orig_pkts"])
        assert conn.resp_pkts == int(row["resp_pkts"])
        assert conn.orig_ip_bytes == int(row["orig_ip_bytes"])
        assert conn.resp_ip_bytes == int(row["resp_ip_bytes"])
        assert conn.orig_bytes == _optional_int(row["orig_bytes"])
        assert conn.resp_bytes == _optional_int(row["resp_bytes"])
        assert conn.duration == pytest.approx(float(row["duration"]), abs=1e-6)
        assert conn.missed_bytes == int(row["missed_bytes"])
        assert conn.service is None
        assert row["service"] == "-"


_CONN_ID = re.compile(r"\[orig_h=([^,]+), orig_p=(\d+)/icmp, resp_h=([^,]+), resp_p=(\d+)/icmp")


def _zeek_icmp_ids(baseline: str) -> set[Tuple4]:
    text = (BASELINES / baseline).read_text()
    return {(a, int(ap), b, int(bp)) for a, ap, b, bp in _CONN_ID.findall(text)}


@pytest.mark.parametrize(
    ("trace", "baseline"),
    [
        # echo request/reply share one connection: resp_p is the counterpart type (0)
        ("icmp-ping.pcap", "core.icmp.icmp-events.output"),
        # a one-way message (destination unreachable, code 3): resp_p is the code
        ("icmp-destunreach-udp.pcap", "core.icmp.icmp-events.output"),
        ("5-pings.pcap", "core.connection_status_update.out"),
    ],
)
def test_icmp_connection_ids_match_zeek(trace: str, baseline: str) -> None:
    ours = {(c.orig_h, c.orig_p, c.resp_h, c.resp_p) for c in _conns(trace)}
    hosts = {(c.orig_h, c.resp_h) for c in _conns(trace)}
    # The icmp-events baseline covers three traces; keep the ids of the one we replayed.
    theirs = {cid for cid in _zeek_icmp_ids(baseline) if (cid[0], cid[2]) in hosts}
    assert ours == theirs
    assert len(ours) == 1


def test_icmp_ping_counts_match_zeek_icmp_info_lengths() -> None:
    # icmp-events reports len=56 per echo message: the ICMP payload after its 8-byte header,
    # which is what Zeek adds up into orig_bytes/resp_bytes for ICMP.
    (conn,) = _conns("icmp-ping.pcap")
    assert (conn.orig_pkts, conn.resp_pkts) == (2, 2)
    assert (conn.orig_bytes, conn.resp_bytes) == (2 * 56, 2 * 56)


def test_fragmented_ipv6_dns_flows_match_zeek_dns_log_tuples() -> None:
    rows = _read_zeek_log(BASELINES / "core.ipv6-frag.dns.log")
    # Zeek logs one uid per 5-tuple (two queries share the second connection).
    theirs = {
        (r["id.orig_h"], int(r["id.orig_p"]), r["id.resp_h"], int(r["id.resp_p"])) for r in rows
    }
    assert len({r["uid"] for r in rows}) == len(theirs) == 2
    conns = _conns("ipv6-fragmented-dns.pcap")
    assert {(c.orig_h, c.orig_p, c.resp_h, c.resp_p) for c in conns} == theirs
    assert {c.conn_state for c in conns} == {"SF"}


def test_zero_ip_length_raises_the_same_weird_as_zeek() -> None:
    (row,) = _read_zeek_log(BASELINES / "core.ip-broken-header.weird.log")
    weirds = [r for r in iter_records(DATA / "ip-bogus-header-len.pcap") if isinstance(r, Weird)]
    assert [(w.name, w.source) for w in weirds] == [(row["name"], row["source"])]
