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
from a2z.rules.anomaly.window import link_control
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


OFFICE = "benign-office.pcap"  # scripts/make-benign-office.py: the tenant's own steady traffic
TRAIN, VALIDATE = 0.6, 0.8  # the office capture's cut points, by position in its records

Segment = tuple[str, list[Record]]  # a named run of records
Best = dict[str, float]  # each source's highest score in a segment


def split_benign(benign: Sequence[Path]) -> tuple[list[Segment], list[Segment], list[Segment]]:
    """Training, validation and test segments (60/20/20), disjoint.

    The office capture (the tenant's own hosts) is cut in time, so the model only ever scores
    the future of what it learned. The other benign captures (unrelated networks: every source
    is a host the tenant never had) are whole units dealt by rank of size, so each part gets
    big and small ones. The office's training part comes last: it is the tenant's steady state.
    """
    parts: tuple[list[Segment], list[Segment], list[Segment]] = ([], [], [])
    corpus: list[Segment] = []
    for path in benign:
        records = [r for r in iter_records(path) if isinstance(r, (Conn, Dns))]
        if path.name == OFFICE:
            cut, end = int(len(records) * TRAIN), int(len(records) * VALIDATE)
            office = [records[:cut], records[cut:end], records[end:]]
        else:
            corpus.append((path.name, records))
    corpus.sort(key=lambda seg: (-sum(isinstance(r, Conn) for r in seg[1]), seg[0]))
    for i, segment in enumerate(corpus):
        parts[0 if i % 5 < 3 else 1 if i % 5 == 3 else 2].append(segment)
    for part, name, records in zip(parts, ("[:60%]", "[60-80%]", "[80%:]"), office, strict=True):
        part.append((OFFICE + name, records))
    return parts


def source_scores(model: SourceAnomalyModel, records: Sequence[Record]) -> Best:
    """Each source's highest score over ``records``, as ``model`` goes on learning them."""
    best: Best = {}
    for record in records:
        score = model.observe(record)
        if score is not None:
            best[record.orig_h] = max(best.get(record.orig_h, 0.0), score)
    return best


def score_segments(
    model: SourceAnomalyModel, segments: Sequence[Segment]
) -> list[tuple[str, Best]]:
    """The office segment continues the model's own stream (as in the server); any other
    segment is scored from a copy, so one unrelated capture never shapes another's scores."""
    scored = []
    for name, records in segments:
        scorer = model if name.startswith(OFFICE) else copy.deepcopy(model)
        scored.append((name, source_scores(scorer, records)))
    return scored


def pick_threshold(scores: Sequence[float], budget: float) -> float:
    """The lowest threshold (steps of 0.005) that flags at most ``budget`` of these sources."""
    for step in range(100, 200):
        threshold = step / 200
        if sum(s >= threshold for s in scores) <= budget * len(scores):
            return threshold
    return 1.0


def flagged(scored: Sequence[tuple[str, Best]], threshold: float) -> list[str]:
    return [
        f"{n}: {src} ({s:.3f})" for n, best in scored for src, s in best.items() if s >= threshold
    ]


def evaluate_model(cases: Sequence[tuple[Path, set[str]]], budget: float) -> None:
    """The backend's anomaly model (ADR 15) as one tenant would see it.

    Benign traffic is split into training (learned in order: the warm-up), validation and
    test (``split_benign``). The threshold is the lowest that flags at most ``budget`` of the
    validation sources: once over all of them, and once over the tenant's own hosts only (the
    office capture), to show what unrelated networks' traffic costs. Each attack capture is
    scored from a copy of the final state. The unit is a source in a segment, as alerts are
    (one per source per window): an attack capture is found when its attacker is flagged, and
    any other flagged source is a false positive. The model learns a record unless it scores
    at or above the default threshold, as in the server.
    """
    train, validation, test = split_benign([p for p, keys in cases if not keys])
    learned = sum(
        isinstance(r, Conn) and not link_control(r.resp_h) for _n, records in train for r in records
    )
    settings = AnomalySettings(warm_up=learned, window=250)
    model = SourceAnomalyModel(settings)
    for _name, records in train:
        for record in records:
            model.observe(record)
    valid = score_segments(model, validation)
    tested = score_segments(model, test)
    attacks = [(p.name, [r for r in iter_records(p) if isinstance(r, (Conn, Dns))])
               for p, keys in cases if keys]  # fmt: skip
    attacked = score_segments(model, attacks)
    own = [(n, b) for n, b in valid if n.startswith(OFFICE)]
    print(
        f"\nanomaly model (per-source windows of {settings.span:g} s): warm-up on {len(train)} "
        f"benign segments ({learned:,} connections, the tenant's own {OFFICE} last); "
        f"validation {len(validation)} segments ({sum(len(b) for _n, b in valid)} sources, "
        f"{sum(len(b) for _n, b in own)} of them the tenant's), test {len(test)} segments "
        f"({sum(len(b) for _n, b in tested)} sources); at most {budget:.0%} of validation "
        "sources flagged"
    )
    chosen = pick_threshold([s for _n, b in valid for s in b.values()], budget)
    own_only = pick_threshold([s for _n, b in own for s in b.values()], budget)
    print(f"{'':<50} {'atk':>3} {'found':>5} {'flags':>5} {'FP':>4} {'precision':>9} {'recall':>7}")
    rows = [(chosen, "chosen on all validation", True), (own_only, "chosen on own hosts", False)]
    rows += [(t, "trade-off, for tuning", False) for t in (0.9, 0.95, 0.97, 0.98)]
    for threshold, label, listed in rows:
        false = flagged(tested, threshold)
        found = behavioural = true = 0
        for name, best in attacked:
            hits = {src for src, s in best.items() if s >= threshold}
            found += bool(hits & ATTACKERS)
            behavioural += bool(hits & ATTACKERS) and name.startswith(BEHAVIOURAL)
            true += len(hits & ATTACKERS)
            false += [f"{name}: {src} ({best[src]:.3f})" for src in sorted(hits - ATTACKERS)]
        precision = true / (true + len(false)) if true + len(false) else None
        kinds = sum(name.startswith(BEHAVIOURAL) for name, _b in attacked)
        print(
            f"{RULE_ID + ' @' + format(threshold, '.3f') + ' (' + label + ')':<50}"
            f" {len(attacks):>3} {found:>5} {true + len(false):>5} {len(false):>4}"
            f" {_pct(precision):>9} {_pct(found / len(attacks)):>7}"
            f"   behavioural {behavioural}/{kinds}"
        )
        for fp in false if listed else []:
            print(f"  false positive: {fp}")
    for name, best in attacked:
        top = max((s for src, s in best.items() if src in ATTACKERS), default=0.0)
        print(f"  {name:<28} attacker's top score {top:.3f}")


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
