"""Edge detection stage: the demo capture's attacks raise the expected alerts, benign captures
none; Sigma rules run beside the built-ins; a failing detection never stops the stream."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from a2z.agent.detect import EdgeDetector, load_rules
from a2z.agent.replay import iter_records, run_replay
from a2z.records import Alert, Conn, Http, Record, Severity
from a2z.rules import CompiledRule, RuleSet
from a2z.rules.detections import DetectionInfo, DetectionStats

DATA = Path(__file__).resolve().parents[1] / "data"
DEMO = Path(__file__).resolve().parents[2] / "src" / "a2z" / "demo" / "data" / "attack.pcap"
ATTACKER, VICTIM = "10.66.0.10", "10.66.0.20"

# What the demo capture holds (src/a2z/demo/data/README.md), as dedup keys of first alerts.
DEMO_EXPECTED = {
    f"a2z.net.scan.vertical|{ATTACKER}|{VICTIM}",  # nmap -sS / -sT
    f"a2z.net.scan.horizontal|{ATTACKER}|tcp|22",  # nmap sweep of .20-.30
    f"a2z.net.scan.horizontal|{ATTACKER}|tcp|80",
    f"a2z.net.scan.horizontal|{ATTACKER}|tcp|443",
    f"a2z.net.scan.horizontal|{ATTACKER}|tcp|445",
    f"a2z.net.synflood|{VICTIM}|80",  # hping3 -S -p 80
    f"a2z.dns.tunnel|{ATTACKER}|evil-tunnel.test",  # 30 long TXT names
    f"a2z.dns.dga|{ATTACKER}",  # 20 random .com names, NXDOMAIN
    f"a2z.web.scanner_ua|{ATTACKER}|{VICTIM}|sqlmap",
    f"a2z.web.scanner_ua|{ATTACKER}|{VICTIM}|Nikto",
    f"a2z.web.scanner_ua|{ATTACKER}|{VICTIM}|masscan",
    f"a2z.web.scanner_ua|{ATTACKER}|{VICTIM}|ZGrab",
    f"a2z.web.traversal|{ATTACKER}|{VICTIM}",  # /../../etc/passwd, ..%2f
    f"a2z.cred.cleartext|{ATTACKER}|{VICTIM}|http-basic",  # curl -u admin:hunter2
    f"a2z.net.beacon|{ATTACKER}|{VICTIM}|80|tcp",  # 8 GETs ~1.014 s apart
}

# Benign captures of tests/data (sources in tests/data/README.md): browsing, DNS, TLS, QUIC,
# ICMP, IPv6. nmap-vsn.pcap and the bad/ corpus are left out on purpose.
BENIGN = sorted(
    p.name
    for p in [*DATA.glob("*.pcap"), *DATA.glob("*.pcapng")]
    if p.name not in {"nmap-vsn.pcap"}
)


def alerts_of(path: Path, detector: EdgeDetector | None = None) -> list[Alert]:
    detector = detector or EdgeDetector()
    return [r for r in detector.records(iter_records(path)) if isinstance(r, Alert)]


def test_demo_capture_raises_each_expected_alert_and_nothing_else() -> None:
    alerts = alerts_of(DEMO)
    first = {a.dedup_key for a in alerts if a.count == 1 and "repeats" not in (a.msg or "")}
    assert first == DEMO_EXPECTED
    for alert in alerts:
        assert alert.uids, alert
        assert alert.attack, alert


def test_demo_capture_alert_evidence_points_at_records_of_the_capture() -> None:
    records = list(EdgeDetector().records(iter_records(DEMO)))
    uids = {r.uid for r in records if not isinstance(r, Alert)}
    alerts = [r for r in records if isinstance(r, Alert)]
    for alert in alerts:
        assert set(alert.uids) <= uids, alert.rule_id
    # Evidence of the SYN flood is the half-open conns hping3 left.
    flood = next(a for a in alerts if a.rule_id == "a2z.net.synflood")
    by_uid = {r.uid: r for r in records if isinstance(r, Conn)}
    assert all(by_uid[u].history == "ShR" for u in flood.uids)


def test_demo_capture_repeats_are_suppressed_and_counted() -> None:
    alerts = alerts_of(DEMO)
    summaries = [a for a in alerts if "repeats suppressed" in (a.msg or "")]
    assert summaries
    keys = [a.dedup_key for a in alerts if a not in summaries]
    assert len(keys) == len(set(keys)), "a key is emitted once per window"
    nikto = next(a for a in summaries if a.dedup_key.endswith("|Nikto"))
    assert nikto.count == 2  # curl sent three requests with Nikto's agent


@pytest.mark.parametrize("name", BENIGN)
def test_benign_capture_raises_no_alert(name: str) -> None:
    assert alerts_of(DATA / name) == []


def test_replay_prints_alerts_among_records_and_counts_them() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_replay(str(DEMO), out, err, EdgeDetector()) == 0
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    paths = [d["_path"] for d in docs]
    first_alert = paths.index("alert")
    assert "conn" in paths[first_alert:], "alerts follow their records, not the end of output"
    scan = next(d for d in docs if d.get("rule_id") == "a2z.net.scan.vertical")
    assert scan["attack"] == ["T1046"]
    assert scan["severity"] == "medium"
    assert "alerts: a2z.cred.cleartext=1" in err.getvalue()


SIGMA_RULE = """
title: Request for the demo's admin page
id: 6c1fb5e4-8f0e-4d3a-9d57-3d8e2b1a0a01
status: test
logsource:
    category: proxy
detection:
    selection:
        c-uri|startswith: '/admin'
    condition: selection
level: low
tags:
    - attack.t1078
"""


def test_sigma_rules_run_beside_builtins(tmp_path: Path) -> None:
    rule = tmp_path / "admin.yml"
    rule.write_text(SIGMA_RULE)
    broken = tmp_path / "broken.yml"
    broken.write_text("title: no detection\n")
    rules, errors = load_rules([tmp_path])
    assert len(rules) == 1
    assert [Path(e.path or "").name for e in errors] == ["broken.yml"]
    alerts = alerts_of(DEMO, EdgeDetector(rules=rules))
    sigma = [a for a in alerts if a.rule_id == "6c1fb5e4-8f0e-4d3a-9d57-3d8e2b1a0a01"]
    assert [a.count for a in sigma] == [1, 1]  # two requests: the alert, then the summary
    assert sigma[1].msg == "1 repeats suppressed in the window"
    assert sigma[0].attack == ["T1078"]
    assert sigma[0].severity == Severity.LOW


def test_cli_replay_rules_and_no_detect(tmp_path: Path) -> None:
    rule = tmp_path / "admin.yml"
    rule.write_text(SIGMA_RULE)
    cmd = [sys.executable, "-m", "a2z", "agent", "replay", str(DEMO)]
    with_rules = subprocess.run(
        [*cmd, "--rules", str(rule)], capture_output=True, text=True, check=True, timeout=120
    )
    assert '"rule_id":"6c1fb5e4-8f0e-4d3a-9d57-3d8e2b1a0a01"' in with_rules.stdout
    assert '"rule_id":"a2z.net.synflood"' in with_rules.stdout
    plain = subprocess.run(
        [*cmd, "--no-detect"], capture_output=True, text=True, check=True, timeout=120
    )
    assert '"alert"' not in plain.stdout
    missing = subprocess.run(
        [*cmd, "--rules", str(tmp_path / "nope.yml")], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2
    assert "nope.yml" in missing.stderr


class _Broken:
    info: ClassVar[DetectionInfo] = DetectionInfo("test.broken", "broken", Severity.LOW, ("T0",))
    consumes: ClassVar[tuple[type[Record], ...]] = (Conn,)

    def __init__(self) -> None:
        self.stats = DetectionStats()

    def observe(self, record: Record) -> list[Alert]:
        raise ZeroDivisionError("bug")


def test_failing_detection_is_counted_and_the_stream_goes_on() -> None:
    detector = EdgeDetector()
    broken = _Broken()
    detector.detections.append(broken)
    detector._by_type[Conn].insert(0, broken)
    records = list(detector.records(iter_records(DEMO)))
    assert detector.stats.errors == {"test.broken": 2698}
    assert sum(isinstance(r, Conn) for r in records) == 2698
    assert any(isinstance(r, Alert) and r.rule_id == "a2z.net.synflood" for r in records)


def test_live_stream_passes_ticks_and_closes_windows_on_them() -> None:
    recs = list(iter_records(DEMO))

    def source() -> Iterator[Record | None]:
        yield from recs
        yield None  # a tick at wall-clock time: every window of 2026's capture has ended

    out = list(EdgeDetector().live(source()))
    assert None in out
    tick = out.index(None)
    summaries = [a for a in out[:tick] if isinstance(a, Alert) and "repeats" in (a.msg or "")]
    assert summaries, "the tick closed the windows and reported their repeats"
    assert not [a for a in out[tick + 1 :] if isinstance(a, Alert)]


def test_failing_sigma_predicate_is_counted_and_the_stream_goes_on() -> None:
    def explode(record: object) -> bool:
        raise ValueError("bad predicate")

    bad = CompiledRule("bad", "bad", Severity.LOW, (), Http, explode, None)
    detector = EdgeDetector(rules=RuleSet([bad]))
    records = list(detector.records(iter_records(DEMO)))
    assert detector.stats.errors == {"sigma": 23}  # every http record of the capture
    assert any(isinstance(r, Alert) and r.rule_id == "a2z.web.traversal" for r in records)
