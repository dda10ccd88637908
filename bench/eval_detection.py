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
from a2z.records import Alert, Conn, Dns, Record
from a2z.rules.anomaly import RULE_ID, AnomalySettings, SourceAnomalyModel
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


ATTACKERS = frozenset({ATK, "10.77.0.1"})  # the attacking source of every attack capture
BEHAVIOURAL = ("attack.pcap", "dig-", "hping3-", "nmap-connect", "nmap-ping", "nmap-syn",
               "nmap-tcp", "socket-beacon")  # fmt: skip
"""Attack captures anomalous in aggregate per source (scans, floods, sweeps, DNS tunnel and
DGA, beacon); the others are one or two ordinary-looking connections (a login, a URL)."""


def split_benign(
    benign: Sequence[Path], records: dict[Path, list[Record]]
) -> tuple[list[Path], list[Path], list[Path]]:
    """Training, validation and test captures (60/20/20 by rank of size, so each part gets
    big and small captures); whole captures, so no source is in two parts."""
    ranked = sorted(benign, key=lambda p: (-sum(isinstance(r, Conn) for r in records[p]), p.name))
    parts: tuple[list[Path], list[Path], list[Path]] = ([], [], [])
    for i, path in enumerate(ranked):
        parts[0 if i % 5 < 3 else 1 if i % 5 == 3 else 2].append(path)
    return parts


def source_scores(
    model: SourceAnomalyModel, records: Sequence[Record], threshold: float | None = None
) -> dict[str, float]:
    """Each source's highest score over a capture, from a copy of ``model`` (left untouched)."""
    scorer = copy.deepcopy(model)
    best: dict[str, float] = {}
    for record in records:
        score = scorer.observe(record, threshold)
        if score is not None:
            best[record.orig_h] = max(best.get(record.orig_h, 0.0), score)
    return best


def pick_threshold(scores: Sequence[float], budget: float) -> float:
    """The lowest threshold (steps of 0.005) that flags at most ``budget`` of these sources."""
    for step in range(100, 200):
        threshold = step / 200
        if sum(s >= threshold for s in scores) <= budget * len(scores):
            return threshold
    return 1.0


def evaluate_model(cases: Sequence[tuple[Path, set[str]]], budget: float) -> None:
    """The backend's anomaly model (ADR 8) as one tenant would see it, on three disjoint parts.

    The benign captures are split into training (learned in order: the warm-up), validation
    (the threshold is the lowest that flags at most ``budget`` of its sources) and test. The
    test captures and each attack capture are then scored from copies of the trained state.
    The unit is a source in a capture, as alerts are (one per source per window): a flagged
    test source is a false positive; an attack capture is found when its attacker is flagged.
    """
    benign = [p for p, keys in cases if not keys]
    attacks = [p for p, keys in cases if keys]
    records = {
        p: [r for r in iter_records(p) if isinstance(r, (Conn, Dns))] for p in benign + attacks
    }
    train, validation, test = split_benign(benign, records)
    learned = sum(isinstance(r, Conn) for p in train for r in records[p])
    settings = AnomalySettings(warm_up=max(learned, 250), window=250)
    model = SourceAnomalyModel(settings)
    for path in train:
        for record in records[path]:
            model.observe(record)
    valid = [s for p in validation for s in source_scores(model, records[p]).values()]
    threshold = pick_threshold(valid, budget)
    false = [
        f"{p.name}: {src}"
        for p in test
        for src, s in source_scores(model, records[p], threshold).items()
        if s >= threshold
    ]
    tested = sum(len(source_scores(model, records[p])) for p in test)
    benign_false = len(false)
    found = behavioural = found_behavioural = true = 0
    rows = []
    for path in attacks:
        best = source_scores(model, records[path], threshold)
        flagged = {src for src, s in best.items() if s >= threshold}
        hit = bool(flagged & ATTACKERS)
        found += hit
        true += len(flagged & ATTACKERS)
        false += [f"{path.name}: {src}" for src in sorted(flagged - ATTACKERS)]
        if path.name.startswith(BEHAVIOURAL):
            behavioural += 1
            found_behavioural += hit
        top = max((s for src, s in best.items() if src in ATTACKERS), default=0.0)
        rows.append(f"  {path.name:<28} attacker's top score {top:.3f}  {'found' if hit else '-'}")
    precision = true / (true + len(false)) if true + len(false) else None
    print(
        f"\nanomaly model (per-source windows of {settings.span:g} s): trained on {len(train)} "
        f"benign captures ({learned:,} connections, the whole warm-up); threshold "
        f"{threshold:.3f} chosen on {len(validation)} validation captures ({len(valid)} sources, "
        f"at most {budget:.0%} flagged); {benign_false} of {tested} sources of the {len(test)} "
        "held-out benign test captures flagged"
    )
    print(
        f"{RULE_ID:<26} {len(attacks):>9} {found:>6} {true + len(false):>6} {len(false):>4}"
        f" {_pct(precision):>9} {_pct(found / len(attacks) if attacks else None):>7}"
    )
    share = found_behavioural / behavioural if behavioural else None
    print(
        f"{'  behavioural attacks':<26} {behavioural:>9} {found_behavioural:>6} {_pct(share):>36}"
    )
    print("\n".join(rows))
    for fp in false:
        print(f"  false positive: {fp}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--fp-budget", type=float, default=0.1,
        help="anomaly model: share of validation sources the chosen threshold may flag",
    )  # fmt: skip
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
    evaluate_model(cases, args.fp_budget)


if __name__ == "__main__":
    main()
