"""``make bench-rules``: Sigma rule matching, records/s with 10, 100 and 1,000 rules.

The rules are the SigmaHQ network and web rules we compile, plus variants of them (every
string value given a suffix, so the shapes, modifiers and record types stay those of real
rules but the variants rarely match) to reach 1,000. The records are the demo capture
(real dig, curl, nmap, hping3 traffic) replayed by the agent. Each size is timed through
``RuleSet.match`` (record-type index plus Aho-Corasick literal prefilter) and through
``match_naive`` (every rule of the record's type on every record) as the reference; both
must produce the same alerts.

Then the built-in detections (``a2z.rules.detections``) on the same records: the whole edge
stage (every built-in plus suppression, a fresh stage per pass, as a new replay would make),
and each detection alone on the records of the types it consumes.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from a2z.agent.replay import iter_records
from a2z.records import Alert, Record
from a2z.rules import CompiledRule, RuleError, RuleSet, compile_yaml, match_naive
from a2z.rules.detections import builtin_detections
from a2z.rules.detections.names import registered_domain
from a2z.rules.fields import RuleRecord
from a2z.rules.suppress import Suppressor

ROOT = Path(__file__).resolve().parents[1]
ATTACK = ROOT / "src" / "a2z" / "demo" / "data" / "attack.pcap"
CORPUS = Path("/work/shared/corpus/sigma/rules")
KEEP_VALUES = ("cidr", "fieldref", "exists", "expand", "base64offset", "windash")


def corpus_documents() -> list[dict[str, Any]]:
    """The corpus rules we compile, as parsed YAML documents."""
    docs = []
    for path in sorted(p for d in ("network", "web") for p in (CORPUS / d).rglob("*.yml")):
        text = path.read_text(encoding="utf-8")
        try:
            compile_yaml(text)
        except RuleError:
            continue
        docs.append(yaml.safe_load(text))
    return docs


def _mutate(value: Any, suffix: str, key: str) -> Any:
    if isinstance(value, list):
        return [_mutate(v, suffix, key) for v in value]
    if isinstance(value, dict):
        return {k: _mutate(v, suffix, k) for k, v in value.items()}
    if isinstance(value, str) and not any(m in key.split("|")[1:] for m in KEEP_VALUES):
        return value[:-1] + suffix + "*" if value.endswith("*") else value + suffix
    return value


def variant(doc: dict[str, Any], n: int) -> dict[str, Any]:
    """A copy of a corpus rule whose string values all carry a unique suffix."""
    suffix = f"v{n:04d}"
    detection = {
        k: (v if k == "condition" else _mutate(v, suffix, k)) for k, v in doc["detection"].items()
    }
    rule_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"a2z-bench/{doc['id']}/{n}"))
    return {**doc, "id": rule_id, "title": f"{doc['title']} ({suffix})", "detection": detection}


def build_rules(count: int, docs: Sequence[dict[str, Any]]) -> list[CompiledRule]:
    """The first ``count`` of: the corpus rules, then variants of them in turn."""
    rules = [compile_yaml(yaml.safe_dump(d)) for d in docs[:count]]
    n = 0
    while len(rules) < count:
        rules.append(compile_yaml(yaml.safe_dump(variant(docs[n % len(docs)], n))))
        n += 1
    return rules


def rate(
    fn: Callable[[RuleRecord], list[Alert]], records: Sequence[RuleRecord], min_s: float
) -> tuple[float, int]:
    """Records/s of ``fn`` over ``records`` (repeated for at least ``min_s``), and alerts."""
    done = alerts = 0
    start = time.perf_counter()
    while True:
        for rec in records:
            alerts += len(fn(rec))
        done += len(records)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return done / elapsed, alerts * len(records) // done


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per run")
    args = parser.parse_args(argv)

    every: list[Record] = list(iter_records(ATTACK))
    records = [r for r in every if not isinstance(r, Alert)]
    registered_domain("www.example.com")  # parse the public suffix list outside the timings
    mix = Counter(type(r).__name__.lower() for r in records)
    app = [r for r in records if type(r).__name__ in ("Http", "Dns")]
    docs = corpus_documents()
    print(f"records: {len(records)} from {ATTACK.name} ({dict(mix)}); corpus rules: {len(docs)}")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    header = f"{'rules':>6} {'mix':>9} {'indexed rec/s':>14} {'naive rec/s':>12} {'ratio':>6}"
    print(header + f" {'alerts/pass':>11}")
    for size in args.sizes:
        rules = build_rules(size, docs)
        ruleset = RuleSet(rules)
        for rec in records:  # the two must agree before their speed means anything
            assert ruleset.match(rec) == match_naive(rules, rec)
        for name, sample in (("all", records), ("http+dns", app)):
            fast, alerts = rate(ruleset.match, sample, args.seconds)
            slow, _ = rate(functools.partial(match_naive, rules), sample, args.seconds)
            print(
                f"{size:>6} {name:>9} {fast:>14,.0f} {slow:>12,.0f} {fast / slow:>5.1f}x"
                f" {alerts:>11}"
            )
    bench_builtins(records, args.seconds)


def builtins_rate(records: Sequence[Record], min_s: float) -> tuple[float, int]:
    """Records/s of every built-in plus suppression (fresh state per pass), and alerts/pass."""
    done = alerts = 0
    start = time.perf_counter()
    while True:
        detections = builtin_detections()
        by_type: dict[type, list[Any]] = {}
        for d in detections:
            for t in d.consumes:
                by_type.setdefault(t, []).append(d)
        suppressor = Suppressor()
        for rec in records:
            for d in by_type.get(type(rec), ()):
                for alert in d.observe(rec):
                    alerts += len(suppressor.admit(alert))
        alerts += len(suppressor.flush())
        done += len(records)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return done / elapsed, alerts * len(records) // done


def bench_builtins(records: Sequence[Record], min_s: float) -> None:
    """Print the built-in detections' records/s: all together, then each alone."""
    fast, alerts = builtins_rate(records, min_s)
    print(f"built-in detections + suppression: {fast:>10,.0f} records/s ({alerts} alerts/pass)")
    print(f"{'detection':<26} {'records':>8} {'rec/s':>12}")
    for detection in builtin_detections():
        mine = [r for r in records if isinstance(r, detection.consumes)]
        kind = type(detection)
        done = 0
        start = time.perf_counter()
        while True:
            d = kind()
            for rec in mine:
                d.observe(rec)
            done += len(mine)
            elapsed = time.perf_counter() - start
            if elapsed >= min_s / 4:
                break
        print(f"{detection.info.rule_id:<26} {len(mine):>8} {done / elapsed:>12,.0f}")


if __name__ == "__main__":
    main()
