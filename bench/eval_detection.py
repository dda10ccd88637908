"""``make eval-detection``: precision and recall of each built-in detection on labelled captures.

The labelled set: the demo capture (nmap, hping3, dig, curl attacks, labelled below), the
real-tool captures of ``bench/data/detect/`` (one attack or benign session each, labels in its
``labels.json``) and the benign captures of ``tests/data/`` (browsing, DNS, TLS, QUIC, ICMP,
IPv6: no alert expected). Each capture is replayed through the agent's pipeline and edge
detection. An *incident* is a labelled dedup key; an alert is a true positive when its dedup
key is labelled for that capture, a false positive otherwise (window summaries are not
counted: they repeat an alert already judged). Precision = TP / alerts, recall = incidents
found / incidents.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from a2z.agent.detect import EdgeDetector
from a2z.agent.replay import iter_records
from a2z.records import Alert, Conn
from a2z.rules.anomaly import AnomalySettings, ConnAnomalyModel
from a2z.rules.detections import BUILTIN_RULE_IDS

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "a2z" / "demo" / "data" / "attack.pcap"
LABELLED = ROOT / "bench" / "data" / "detect"
BENIGN_DIR = ROOT / "tests" / "data"
NOT_BENIGN = {"nmap-vsn.pcap"}  # an nmap version scan: not labelled either way, left out

ATK, VIC = "10.66.0.10", "10.66.0.20"
DEMO_LABELS = [  # src/a2z/demo/data/README.md lists what the capture holds
    f"a2z.net.scan.vertical|{ATK}|{VIC}",
    *(f"a2z.net.scan.horizontal|{ATK}|tcp|{p}" for p in (22, 80, 443, 445)),
    f"a2z.net.synflood|{VIC}|80",
    f"a2z.dns.tunnel|{ATK}|evil-tunnel.test",
    f"a2z.dns.dga|{ATK}",
    *(f"a2z.web.scanner_ua|{ATK}|{VIC}|{t}" for t in ("sqlmap", "Nikto", "masscan", "ZGrab")),
    f"a2z.web.traversal|{ATK}|{VIC}",
    f"a2z.cred.cleartext|{ATK}|{VIC}|http-basic",
    f"a2z.net.beacon|{ATK}|{VIC}|80|tcp",
]


@dataclass
class Score:
    """Counts for one detection over the whole labelled set."""

    incidents: int = 0
    found: int = 0
    alerts: int = 0
    true: int = 0
    false: list[str] = field(default_factory=list)  # "capture: dedup key" of false positives

    def precision(self) -> float | None:
        return self.true / self.alerts if self.alerts else None

    def recall(self) -> float | None:
        return self.found / self.incidents if self.incidents else None


def labelled_set() -> list[tuple[Path, set[str]]]:
    """Every capture of the evaluation with the dedup keys it must raise."""
    cases: list[tuple[Path, set[str]]] = [(DEMO, set(DEMO_LABELS))]
    labels = json.loads((LABELLED / "labels.json").read_text())
    cases += [(LABELLED / name, set(keys)) for name, keys in sorted(labels.items())]
    benign = sorted([*BENIGN_DIR.glob("*.pcap"), *BENIGN_DIR.glob("*.pcapng")])
    cases += [(p, set()) for p in benign if p.name not in NOT_BENIGN]
    return cases


def rule_of(key: str) -> str:
    return key.partition("|")[0]


def evaluate(cases: Sequence[tuple[Path, set[str]]]) -> tuple[dict[str, Score], int, float]:
    """Replay every case; return the scores by rule id, the records seen and the seconds."""
    scores = {rule_id: Score() for rule_id in BUILTIN_RULE_IDS}
    records = 0
    started = time.perf_counter()
    for path, expected in cases:
        detector = EdgeDetector()
        raised = [
            r.dedup_key
            for r in detector.records(iter_records(path))
            if isinstance(r, Alert) and "repeats suppressed" not in (r.msg or "")
        ]
        records += detector.stats.records
        for key in expected:
            scores[rule_of(key)].incidents += 1
            scores[rule_of(key)].found += key in raised
        for key in raised:
            score = scores[rule_of(key)]
            score.alerts += 1
            if key in expected:
                score.true += 1
            else:
                score.false.append(f"{path.name}: {key}")
    return scores, records, time.perf_counter() - started


def evaluate_model(cases: Sequence[tuple[Path, set[str]]], settings: AnomalySettings) -> None:
    """The backend's anomaly model (ADR 8) as one tenant would see it.

    The model learns the first 70 % of the benign captures' connections (training, warm-up
    included), then scores the remaining benign ones (each flagged one is a false positive) and,
    from a copy of that same state, each attack capture in turn. An attack capture is an
    incident, found when at least one of its connections reaches the threshold; precision is
    over flagged connections (attack captures' connections count as true: they are the
    attack sessions).
    """
    benign = [p for p, keys in cases if not keys]
    attacks = [p for p, keys in cases if keys]
    benign_conns = [r for p in benign for r in iter_records(p) if isinstance(r, Conn)]
    cut = int(len(benign_conns) * 0.7)
    model = ConnAnomalyModel(settings)
    for conn in benign_conns[:cut]:
        model.observe(conn)
    trained = copy.deepcopy(model)
    false = sum(
        1
        for c in benign_conns[cut:]
        if (s := model.observe(c)) is not None and s >= settings.threshold
    )
    found = flagged_attack = 0
    rows = []
    for path in attacks:
        scorer = copy.deepcopy(trained)
        conns = [r for r in iter_records(path) if isinstance(r, Conn)]
        scores = [scorer.observe(c) for c in conns]
        hits = sum(1 for s in scores if s is not None and s >= settings.threshold)
        found += hits > 0
        flagged_attack += hits
        rows.append(f"  {path.name:<28} {len(conns):>6} conns {hits:>6} flagged")
    flagged = flagged_attack + false
    precision = flagged_attack / flagged if flagged else None
    recall = found / len(attacks) if attacks else None
    print(
        f"\nanomaly model (threshold {settings.threshold}, warm-up {settings.warm_up}, window "
        f"{settings.window}): trained on {cut:,} benign connections; "
        f"{false} of {len(benign_conns) - cut:,} held-out benign connections flagged"
    )
    print(
        f"{'a2z-anomaly-conn':<26} {len(attacks):>9} {found:>6} {flagged:>6} {false:>4}"
        f" {_pct(precision):>9} {_pct(recall):>7}"
    )
    print("\n".join(rows))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-warm-up", type=int, default=250, help="anomaly model warm-up")
    parser.add_argument("--model-threshold", type=float, default=AnomalySettings().threshold)
    args = parser.parse_args(argv)
    cases = labelled_set()
    attacks = sum(1 for _p, keys in cases if keys)
    scores, records, seconds = evaluate(cases)
    print(
        f"{len(cases)} captures ({attacks} with attacks, {len(cases) - attacks} benign), "
        f"{records:,} records, {seconds:.1f} s"
    )
    print(f"{'detection':<26} {'incidents':>9} {'found':>6} {'alerts':>6} {'FP':>4}"
          f" {'precision':>9} {'recall':>7}")  # fmt: skip
    total = Counter[str]()
    for rule_id, s in scores.items():
        print(
            f"{rule_id:<26} {s.incidents:>9} {s.found:>6} {s.alerts:>6} {len(s.false):>4}"
            f" {_pct(s.precision()):>9} {_pct(s.recall()):>7}"
        )
        total.update(incidents=s.incidents, found=s.found, alerts=s.alerts, true=s.true)
    overall = Score(total["incidents"], total["found"], total["alerts"], total["true"])
    print(
        f"{'all':<26} {overall.incidents:>9} {overall.found:>6} {overall.alerts:>6}"
        f" {overall.alerts - overall.true:>4} {_pct(overall.precision()):>9}"
        f" {_pct(overall.recall()):>7}"
    )
    for s in scores.values():
        for fp in s.false:
            print(f"  false positive: {fp}")
    evaluate_model(
        cases,
        AnomalySettings(warm_up=args.model_warm_up, window=min(250, args.model_warm_up),
                        threshold=args.model_threshold),
    )  # fmt: skip


if __name__ == "__main__":
    main()
