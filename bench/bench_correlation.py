"""``make bench-rules`` (correlation): records/s through Sigma correlation rules, per tenant.

Six correlations of every kind (a value_count port scan, an event_count of HTTP 401s, a
temporal_ordered chain of an event_count of S0 then an SF, a temporal of NXDOMAIN + REJ + 404,
and an upper-bound event_count judged at window end) are copied 1, 10 and 30 times under new
ids. The stream is synthetic: conn, dns and http records from 5,000 sources (50 of them busy),
40% of them matching some base rule, timestamps slightly disordered (up to 2 s, tolerance
5 s), over 4 tenants. records/s includes base-rule matching (the existing RuleSet), which
"base rec/s" times alone; matches/s counts the base-rule matches fed to the correlations.
Rates are per CPU second of this process (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psutil
import yaml

from a2z.records import Conn, Dns, Http
from a2z.rules.correlation import CorrelationSettings, Correlator, compile_correlations


def base(name: str, logsource: dict[str, str], selection: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "title": name,
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"a2z-bench/{name}/{n}")),
        "name": f"{name}_{n}",
        "logsource": logsource,
        "detection": {"selection": selection, "condition": "selection"},
    }


def corr(name: str, n: int, **section: Any) -> dict[str, Any]:
    return {
        "title": f"{name} {n}",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"a2z-bench/{name}/{n}")),
        "name": f"{name}_{n}",
        "correlation": section,
    }


def documents(n: int) -> list[dict[str, Any]]:
    """Copy ``n`` of the five correlations and their base rules (values differ per copy)."""
    conn_ls = {"product": "zeek", "service": "conn"}
    http_ls = {"product": "zeek", "service": "http"}
    port = 1000 + n  # each copy watches its own ports, so copies do not all match together
    return [
        base("s0", conn_ls, {"conn_state": ["S0", "REJ"], "id.resp_p|gte": port}, n),
        base("sf", conn_ls, {"conn_state": "SF", "id.resp_p": port}, n),
        base("rej", conn_ls, {"conn_state": "REJ", "id.resp_p": port}, n),
        base("h401", http_ls, {"status_code": 401, "uri|startswith": f"/login{n}"}, n),
        base("h404", http_ls, {"status_code": 404, "uri|startswith": f"/x{n}"}, n),
        base("nx", {"category": "dns"}, {"rcode_name": "NXDOMAIN", "query|endswith": f"d{n}.t"}, n),
        corr("scan", n, type="value_count", rules=[f"s0_{n}"], **{"group-by": ["id.orig_h"]},
             timespan="1m", condition={"field": "id.resp_p", "gte": 50}),
        corr("brute", n, type="event_count", rules=[f"h401_{n}"], **{"group-by": ["id.orig_h"]},
             timespan="5m", condition={"gte": 20}),
        corr("many_s0", n, type="event_count", rules=[f"s0_{n}"], **{"group-by": ["id.orig_h"]},
             timespan="5m", condition={"gte": 10}),
        corr("then_sf", n, type="temporal_ordered", rules=[f"many_s0_{n}", f"sf_{n}"],
             **{"group-by": ["id.orig_h"]}, timespan="5m"),
        corr("trio", n, type="temporal", rules=[f"nx_{n}", f"rej_{n}", f"h404_{n}"],
             **{"group-by": ["id.orig_h"]}, timespan="1m"),
        corr("lonely", n, type="event_count", rules=[f"sf_{n}"], **{"group-by": ["id.resp_h"]},
             timespan="10m", condition={"lt": 2}),
    ]  # fmt: skip


def stream(count: int, copies: int, rng: random.Random) -> list[Conn | Dns | Http]:
    out: list[Conn | Dns | Http] = []
    for i in range(count):
        ts = 1.8e9 + i * 0.01 + rng.uniform(0, 2)
        r = rng.getrandbits(32)
        hit = rng.random() < 0.4
        # Matches come mostly from 50 busy sources, the rest from a population of 5,000.
        pool = 50 if hit and rng.random() < 0.5 else 5000
        src = f"10.0.{(r >> 8) % pool // 250}.{(r >> 8) % pool % 250}"
        dst = f"192.0.2.{(r >> 24) & 63}"
        n = rng.randrange(copies)
        ends: dict[str, Any] = {
            "ts": ts,
            "uid": f"U{i}",
            "orig_h": src,
            "orig_p": 40000,
            "resp_h": dst,
        }
        kind = i % 5
        if kind < 3:
            state = rng.choice(["S0", "REJ", "SF"]) if hit else "S1"
            port = 1000 + n + (rng.randrange(200) if state != "SF" else 0)
            out.append(Conn(proto="tcp", conn_state=state, resp_p=port, **ends))
        elif kind == 3:
            status = rng.choice([401, 404]) if hit else 200
            uri = f"/login{n}" if status == 401 else f"/x{n}/a"
            out.append(Http(resp_p=80, status_code=status, uri=uri, host="web.test", **ends))
        else:
            out.append(
                Dns(resp_p=53, proto="udp", trans_id=1, query=f"q{r % 999}.d{n}.t",
                    rcode_name="NXDOMAIN" if hit else "NOERROR", **ends)
            )  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args(argv)
    proc = psutil.Process()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        f"{'corr':>5} {'base':>5} {'records/s':>10} {'base rec/s':>10} {'matches/s':>10}"
        f" {'alerts':>7}"
        f" {'groups':>7} {'late':>5} {'RSS MiB':>8}"
    )
    tenants = ["t0", "t1", "t2", "t3"]
    for copies in args.copies:
        rng = random.Random(copies)
        docs = [d for n in range(copies) for d in documents(n)]
        load = compile_correlations([(None, yaml.safe_dump_all(docs))])
        assert not load.errors, load.errors
        records = stream(args.records, copies, rng)
        start = time.process_time()
        for rec in records:  # base-rule matching alone: the share the RuleSet costs
            load.rules.matches(rec)
        base_rate = len(records) / (time.process_time() - start)
        correlator = Correlator(load.rules, CorrelationSettings(tolerance=5.0), clock=lambda: 2e9)
        rss0 = proc.memory_info().rss
        alerts = peak = 0
        start = time.process_time()
        for i, rec in enumerate(records):
            alerts += len(correlator.process(tenants[i % 4], rec))
            if i % 10_000 == 0:
                peak = max(peak, sum(correlator.open_groups(t) for t in tenants))
        for t in tenants:
            alerts += len(correlator.flush(t))
        elapsed = time.process_time() - start
        totals = correlator.totals
        print(
            f"{len(load.rules):>5} {len(load.rules.base_rules):>5} {len(records) / elapsed:>10,.0f}"
            f" {base_rate:>10,.0f} {totals.events / elapsed:>10,.0f} {alerts:>7,} {peak:>7,}"
            f" {totals.late:>5} {(proc.memory_info().rss - rss0) / 2**20:>8.1f}"
        )


if __name__ == "__main__":
    main()
