"""Built-in detections on hand-made records: each fires on its pattern, not on near misses.

The captures of real tools (tests/agent/test_detect_captures.py) show the same on traffic;
these pin the logic, the thresholds and the bounded state.
"""

from __future__ import annotations

import random
import string

import pytest

from a2z.records import Alert, Ftp, Record
from a2z.rules.detections import BUILTIN_RULE_IDS, BoundedMap, DetectionStats, builtin_detections
from a2z.rules.detections.base import Detection
from a2z.rules.detections.beacon import Beaconing, BeaconSettings
from a2z.rules.detections.cleartext import CleartextCredentials
from a2z.rules.detections.dns import DgaLookups, DgaSettings, DnsTunnel, dga_like
from a2z.rules.detections.flood import SynFlood, SynFloodSettings
from a2z.rules.detections.scan import HorizontalScan, IcmpSweep, ScanSettings, VerticalScan
from a2z.rules.detections.web import PathTraversal, ScannerUserAgent, traversal_depth
from tests.rules.builders import conn, dns, http


def feed(detection: Detection, records: list[Record]) -> list[Alert]:
    out: list[Alert] = []
    for record in records:
        out.extend(detection.observe(record))
    return out


def test_builtin_ids_are_unique_and_carry_attack_ids() -> None:
    detections = builtin_detections()
    assert len(set(BUILTIN_RULE_IDS)) == len(BUILTIN_RULE_IDS) == len(detections)
    for d in detections:
        assert d.info.attack, d.info.rule_id
        assert all(t.startswith("T") for t in d.info.attack)


def test_bounded_map_evicts_least_recently_used_and_counts() -> None:
    stats = DetectionStats()
    m: BoundedMap[int, list[int]] = BoundedMap(2, stats)
    m.get(1, list).append(1)
    m.get(2, list)
    m.get(1, list)  # 1 is now the most recent
    m.get(3, list)  # evicts 2
    assert 2 not in m
    assert 1 in m
    assert m.get(1, list) == [1]
    assert stats.evictions == 1
    assert len(m) == 2


def test_vertical_scan_fires_once_on_the_threshold_port() -> None:
    d = VerticalScan(ScanSettings(vertical_ports=5))
    recs: list[Record] = [
        conn(ts=100 + i, uid=f"C{i}", resp_p=1000 + i, conn_state="REJ", history="Sr")
        for i in range(8)
    ]
    alerts = feed(d, recs)
    assert len(alerts) == 1
    assert alerts[0].rule_id == "a2z.net.scan.vertical"
    assert alerts[0].uids == ["C0", "C1", "C2", "C3", "C4"]
    assert alerts[0].dedup_key == "a2z.net.scan.vertical|10.66.0.10|10.66.0.20"
    assert alerts[0].attack == ["T1046"]


def test_vertical_scan_ignores_successful_connections_and_repeated_ports() -> None:
    d = VerticalScan(ScanSettings(vertical_ports=5))
    ok = [conn(ts=100 + i, resp_p=1000 + i, conn_state="SF", resp_bytes=10) for i in range(20)]
    same = [conn(ts=200 + i, resp_p=22, conn_state="REJ") for i in range(20)]
    assert feed(d, [*ok, *same]) == []


def test_vertical_scan_window_restarts_the_count() -> None:
    d = VerticalScan(ScanSettings(vertical_ports=3, window_s=10))
    spread = [conn(ts=100 + 20 * i, resp_p=1000 + i, conn_state="S0") for i in range(6)]
    assert feed(d, spread) == []


def test_horizontal_scan_counts_hosts_per_port() -> None:
    d = HorizontalScan(ScanSettings(horizontal_hosts=4))
    recs: list[Record] = [
        conn(ts=100 + i, resp_h=f"10.66.0.{30 + i}", resp_p=445, conn_state="S0", history="S")
        for i in range(4)
    ]
    alerts = feed(d, recs)
    assert [a.dedup_key for a in alerts] == ["a2z.net.scan.horizontal|10.66.0.10|tcp|445"]


def test_horizontal_scan_ignores_large_unanswered_datagrams() -> None:
    """One-way QUIC (1,200-byte Initials) to many hosts is not a UDP sweep."""
    d = HorizontalScan(ScanSettings(horizontal_hosts=3))
    quic = [
        conn(ts=100 + i, proto="udp", resp_h=f"142.251.0.{i}", resp_p=443, conn_state="S0",
             orig_pkts=1, orig_ip_bytes=1278)
        for i in range(10)
    ]  # fmt: skip
    probes = [
        conn(ts=100 + i, proto="udp", resp_h=f"10.0.0.{i}", resp_p=161, conn_state="S0",
             orig_pkts=1, orig_ip_bytes=68)
        for i in range(3)
    ]  # fmt: skip
    assert feed(d, quic) == []
    assert len(feed(d, probes)) == 1


def test_icmp_sweep_counts_echo_requests_only() -> None:
    d = IcmpSweep(ScanSettings(sweep_hosts=3))
    replies = [
        conn(proto="icmp", orig_p=0, resp_p=0, resp_h=f"10.0.0.{i}", conn_state="OTH")
        for i in range(5)
    ]
    echoes = [
        conn(proto="icmp", orig_p=8, resp_p=0, resp_h=f"10.0.0.{i}", conn_state="OTH")
        for i in range(3)
    ]
    assert feed(d, replies) == []
    assert len(feed(d, echoes)) == 1


def test_syn_flood_needs_the_rate_to_one_service() -> None:
    d = SynFlood(SynFloodSettings(threshold=50, window_s=1.0))
    flood = [
        conn(ts=100 + i / 100, uid=f"C{i}", orig_p=2000 + i, conn_state="RSTO", history="ShR")
        for i in range(60)
    ]
    alerts = feed(d, flood)
    assert len(alerts) == 1
    assert alerts[0].dedup_key == "a2z.net.synflood|10.66.0.20|80"
    slow = SynFlood(SynFloodSettings(threshold=50, window_s=1.0))
    spaced = [conn(ts=100 + i / 10, conn_state="S0", history="S") for i in range(60)]
    assert feed(slow, spaced) == []
    completed = SynFlood(SynFloodSettings(threshold=50, window_s=1.0))
    handshakes = [conn(ts=100 + i / 100, history="ShADadFf") for i in range(60)]
    assert feed(completed, handshakes) == []


def _random_label(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def test_dns_tunnel_fires_on_long_random_subdomains_of_one_parent() -> None:
    rng = random.Random(7)
    d = DnsTunnel()
    queries = [
        dns(ts=100 + i, uid=f"D{i}", query=f"{_random_label(rng, 48)}.t.evil.example",
            qtype_name="TXT")
        for i in range(6)
    ]  # fmt: skip
    alerts = feed(d, queries)
    assert len(alerts) == 1
    assert alerts[0].dedup_key == "a2z.dns.tunnel|10.66.0.10|evil.example"
    assert alerts[0].attack[0] == "T1071.004"


def test_dns_tunnel_silent_on_ordinary_lookups() -> None:
    d = DnsTunnel()
    names = ["www", "mail", "api", "cdn", "static", "images", "login", "docs", "en", "m"]
    queries = [dns(query=f"{n}.example.com", qtype_name=t) for n in names for t in ("A", "AAAA")]
    repeats = [dns(query="example.com", qtype_name="TXT") for _ in range(50)]
    assert feed(d, [*queries, *repeats]) == []


@pytest.mark.parametrize(
    "label",
    [
        "ubwyjgtdckvupzvmbht",
        "nxfefxxnzwnnjxkfa",
        "edqlcsiixnfpoee",
        "kohaohcwcwqbzy",
        "q8zk3m0xv7rt",
    ],
)
def test_dga_like_random_labels(label: str) -> None:
    assert dga_like(label, DgaSettings())


@pytest.mark.parametrize(
    "label",
    ["googlesyndication", "stackoverflow", "githubusercontent", "windowsupdate", "cloudflare",
     "xn--bcher-kva", "facebook", "scorecardresearch", "doubleclick"],
)  # fmt: skip
def test_dga_like_spares_ordinary_names(label: str) -> None:
    assert not dga_like(label, DgaSettings())


def test_dga_burst_needs_several_random_nxdomains() -> None:
    d = DgaLookups(DgaSettings(dga_nxdomains=3))
    nx = [
        dns(ts=100 + i, query=f"{name}.com", rcode_name="NXDOMAIN", answers=None)
        for i, name in enumerate(["ubwyjgtdckvupzvmbht", "nxfefxxnzwnnjxkfa", "kohaohcwcwqbzy"])
    ]
    resolved = [dns(query=f"{name}.com") for name in ["ubwyjgtdckvupzvmbht", "nxfefxxnzwnnjxkfa"]]
    typos = [
        dns(query=f"{name}.com", rcode_name="NXDOMAIN") for name in ["gogle", "facebok", "wikipdia"]
    ]
    chrome = [dns(query=n, rcode_name="NXDOMAIN") for n in ["qwxzkdlfjv", "zxcvbnmqwrt"] * 3]
    assert feed(d, [*resolved, *typos, *chrome]) == []
    alerts = feed(d, nx)
    assert len(alerts) == 1
    assert alerts[0].dedup_key == "a2z.dns.dga|10.66.0.10"


def test_beacon_fires_on_steady_rhythm_not_on_irregular_use() -> None:
    d = Beaconing(BeaconSettings(min_connections=6, max_jitter=0.1))
    rng = random.Random(3)
    steady = [conn(ts=1000 + 60 * i + rng.uniform(-1, 1), uid=f"B{i}") for i in range(6)]
    rng.shuffle(steady)  # conn records come out in flow-end order
    alerts = feed(d, steady)
    assert len(alerts) == 1
    assert alerts[0].dedup_key == "a2z.net.beacon|10.66.0.10|10.66.0.20|80|tcp"
    assert sorted(alerts[0].uids) == sorted(f"B{i}" for i in range(6))
    human = Beaconing(BeaconSettings(min_connections=6))
    browsing = [conn(ts=1000 + t) for t in (0, 3, 40, 41, 200, 230, 600, 601, 900)]
    assert feed(human, browsing) == []
    burst = Beaconing(BeaconSettings(min_connections=6))
    flood = [conn(ts=1000 + i * 0.001) for i in range(50)]
    assert feed(burst, flood) == []


def test_cleartext_basic_auth_names_user_never_password() -> None:
    d = CleartextCredentials()
    alerts = feed(d, [http(username="admin", password="hunter2", uri="/admin")])
    assert len(alerts) == 1
    assert "admin" in (alerts[0].msg or "")
    assert "hunter2" not in str(alerts[0])


@pytest.mark.parametrize(
    "uri",
    ["/login?user=bob&password=s3cret", "/cgi?pwd=x", "http://bob:s3cret@proxy.example/", "/a?login_pass=1"],
)  # fmt: skip
def test_cleartext_secrets_in_urls(uri: str) -> None:
    alerts = feed(CleartextCredentials(), [http(uri=uri)])
    assert len(alerts) == 1
    assert "s3cret" not in (alerts[0].msg or "")


@pytest.mark.parametrize(
    "uri", ["/maps/api/js?token=71150", "/search?q=password+manager", "/passport?id=1", "/"]
)
def test_cleartext_spares_ordinary_urls(uri: str) -> None:
    assert feed(CleartextCredentials(), [http(uri=uri)]) == []


def test_cleartext_ftp_password_but_not_anonymous() -> None:
    d = CleartextCredentials()
    ends = {"ts": 1.0, "uid": "Cftp", "orig_h": "10.0.0.1", "orig_p": 40000,
            "resp_h": "10.0.0.2", "resp_p": 21}  # fmt: skip
    anonymous = Ftp(**ends, user="anonymous", command="PASS", arg="<hidden>", reply_code=230)
    user = Ftp(**ends, user="alice", command="USER", arg="alice", reply_code=331)
    login = Ftp(**ends, user="alice", command="PASS", arg="<hidden>", reply_code=230)
    assert feed(d, [anonymous, user]) == []
    alerts = feed(d, [login])
    assert [a.dedup_key for a in alerts] == ["a2z.cred.cleartext|10.0.0.1|10.0.0.2|ftp"]
    assert alerts[0].msg == "FTP password for 'alice' accepted in cleartext by 10.0.0.2:21"


def test_cleartext_telnet_session_but_not_refused_attempt() -> None:
    d = CleartextCredentials()
    refused = conn(resp_p=23, conn_state="REJ", history="Sr")
    session = conn(resp_p=23, conn_state="SF", orig_bytes=40, resp_bytes=300)
    assert feed(d, [refused]) == []
    assert len(feed(d, [session])) == 1


@pytest.mark.parametrize(
    ("agent", "tool"),
    [
        ("sqlmap/1.7.2#stable (https://sqlmap.org)", "sqlmap"),
        ("Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000001)", "Nikto"),
        ("Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
         "nmap NSE"),
        ("gobuster/3.6", "gobuster"),
        ("Fuzz Faster U Fool v2.1.0", "ffuf"),
    ],
)  # fmt: skip
def test_scanner_user_agents(agent: str, tool: str) -> None:
    alerts = feed(ScannerUserAgent(), [http(user_agent=agent)])
    assert len(alerts) == 1
    assert alerts[0].dedup_key.endswith(f"|{tool}")


def test_scanner_user_agent_spares_browsers_and_curl() -> None:
    agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "curl/7.88.1",
        "python-requests/2.31.0",
        None,
    ]
    assert feed(ScannerUserAgent(), [http(user_agent=a) for a in agents]) == []


@pytest.mark.parametrize(
    ("uri", "depth"),
    [
        ("/../../etc/passwd", 2),
        ("/static/..%2f..%2f..%2fetc%2fpasswd", 3),
        ("/x/%252e%252e%252f%252e%252e%252fwin.ini", 2),
        ("/a/..\\..\\windows\\win.ini", 2),
        ("/download?file=../../../../etc/shadow", 4),
        ("/x/%c0%ae%c0%ae/%c0%ae%c0%ae%c0%afboot.ini", 2),  # overlong UTF-8 dots and slash
        ("/docs/v1.2/index.html", 0),
    ],
)
def test_traversal_depth_decodes_encodings(uri: str, depth: int) -> None:
    assert traversal_depth(uri) == depth


def test_path_traversal_two_levels_or_a_sensitive_target() -> None:
    d = PathTraversal()
    assert len(feed(d, [http(uri="/../../etc/passwd")])) == 1
    assert len(feed(d, [http(uri="/img/../etc/passwd")])) == 1
    assert feed(d, [http(uri="/img/../logo.png")]) == []
