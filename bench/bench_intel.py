"""``make bench-rules`` (intel): 1,000 and 1,000,000 mixed indicators; load, memory, lookups/s.

Indicators are synthetic but shaped like real feeds (addresses, CIDR blocks, IPv6, domains,
URLs, SHA-256, JA3, JA4). Load time is split into normalising the raw values (``make``, what a
feed import pays) and building the ``IndicatorSet``. Memory is the process's RSS growth while
holding the indicators and the set. Lookups go through ``IntelMatcher`` on conn, dns, http and
ssl records (every field the matcher probes), about 1 in 10 of them a hit. Times are CPU
seconds of this process (the machine is shared).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import time
from collections.abc import Callable, Sequence

import psutil

from a2z.records import Conn, Dns, Http, Ssl
from a2z.rules.intel import (
    IndicatorKey,
    IndicatorSet,
    IndicatorType,
    IntelDelta,
    IntelMatcher,
    apply,
    decode_delta,
    encode_delta,
    make,
    snapshot,
)
from a2z.rules.intel.transfer import pack, split

T = IndicatorType
MIX: list[tuple[IndicatorType, float]] = [
    (T.IP, 0.40),  # addresses
    (T.IP, 0.10),  # CIDR blocks, /20 to /28 (together ~2% of the IPv4 space)
    (T.IP, 0.05),  # IPv6
    (T.DOMAIN, 0.25),
    (T.URL, 0.10),
    (T.SHA256, 0.05),
    (T.JA3, 0.03),
    (T.JA4, 0.02),
]


def raw_values(n: int, rng: random.Random) -> list[tuple[IndicatorType, str]]:
    """``n`` raw indicator values in the mix above."""
    out: list[tuple[IndicatorType, str]] = []
    for i, (kind, share) in enumerate(MIX):
        for _ in range(int(n * share)):
            r = rng.getrandbits(32)
            if kind is T.IP and i == 0:
                value = f"{r >> 24}.{(r >> 16) & 255}.{(r >> 8) & 255}.{r & 255}"
            elif kind is T.IP and i == 1:
                value = f"{r >> 24}.{(r >> 16) & 255}.{(r >> 8) & 255}.0/{rng.randint(20, 28)}"
            elif kind is T.IP:
                value = f"2001:db8:{r >> 16:x}:{r & 0xFFFF:x}::{rng.getrandbits(16):x}"
            elif kind is T.DOMAIN:
                value = f"h{r:08x}.{rng.choice(['com', 'net', 'org', 'info', 'xyz'])}"
            elif kind is T.URL:
                value = f"http://u{r:08x}.example/{rng.getrandbits(40):x}/payload.bin"
            elif kind is T.SHA256:
                value = f"{rng.getrandbits(256):064x}"
            elif kind is T.JA3:
                value = f"{rng.getrandbits(128):032x}"
            else:
                b, c = rng.getrandbits(48), rng.getrandbits(48)
                value = f"t13d{rng.randint(1000, 9999)}h2_{b:012x}_{c:012x}"
            out.append((kind, value))
    return out


def records(
    values: Sequence[tuple[IndicatorType, str]], n: int, rng: random.Random
) -> list[Conn | Dns | Http | Ssl]:
    """``n`` records, one in ten carrying a loaded value, the rest random."""
    by_kind: dict[IndicatorType, list[str]] = {}
    for kind, value in values:
        by_kind.setdefault(kind, []).append(value)
    ends = {"orig_p": 50000, "resp_p": 443, "orig_h": "10.1.2.3"}
    out: list[Conn | Dns | Http | Ssl] = []
    for i in range(n):
        hit = i % 10 == 0
        ts = 1.8e9 + i

        def pick(kind: IndicatorType, miss: str, hit: bool = hit) -> str:
            return rng.choice(by_kind[kind]) if hit else miss

        r = rng.getrandbits(32)
        addr = pick(T.IP, f"{r >> 24}.{(r >> 16) & 255}.{(r >> 8) & 255}.{r & 255}").split("/")[0]
        name = pick(T.DOMAIN, f"www.m{r:08x}.com")
        kind = i % 4
        if kind == 0:
            out.append(Conn(ts=ts, uid=f"C{i}", resp_h=addr, proto="tcp", **ends))  # type: ignore[arg-type]
        elif kind == 1:
            out.append(
                Dns(ts=ts, uid=f"D{i}", resp_h="10.0.0.53", proto="udp", trans_id=1,
                    query=f"www.{name}", answers=[addr], **ends)  # type: ignore[arg-type]
            )  # fmt: skip
        elif kind == 2:
            url = pick(T.URL, f"http://m{r:08x}.example/index.html")
            host, _, path = url.removeprefix("http://").partition("/")
            out.append(Http(ts=ts, uid=f"H{i}", resp_h=addr, host=host, uri="/" + path, **ends))  # type: ignore[arg-type]
        else:
            out.append(
                Ssl(ts=ts, uid=f"S{i}", resp_h=addr, server_name=name,
                    ja3=pick(T.JA3, f"{rng.getrandbits(128):032x}"),
                    ja4=pick(T.JA4, "t13d1516h2_8daaf6152771_e5627efa2ab1"), **ends)  # type: ignore[arg-type]
            )  # fmt: skip
    return out


def rate(fn: Callable[[], int], count: int, min_s: float) -> tuple[float, int]:
    """Operations per CPU second of ``fn`` (``count`` per call), repeated for ``min_s``.

    CPU time, not wall time: the machine is shared, and waiting for a core is not our cost.
    """
    done = results = 0
    start = time.process_time()
    while True:
        results = fn()
        done += count
        elapsed = time.process_time() - start
        if elapsed >= min_s:
            return done / elapsed, results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--indicators", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per rate")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"mix: {', '.join(f'{k.value} {s:.0%}' for k, s in MIX)} (ip: address, CIDR, IPv6)")
    for size in args.indicators:
        run(size, args.records, args.seconds)


def run(size: int, nrecords: int, seconds: float) -> None:
    rng = random.Random(7)
    proc = psutil.Process()
    raw = raw_values(size, rng)
    gc.collect()
    rss0 = proc.memory_info().rss
    start = time.process_time()
    indicators = [make(kind, value, source="bench", confidence=80) for kind, value in raw]
    normalised = time.process_time() - start
    start = time.process_time()
    intel = IndicatorSet(indicators, version=1)
    built = time.process_time() - start
    del indicators
    gc.collect()
    rss1 = proc.memory_info().rss
    print(
        f"\n{len(intel):,} indicators\n"
        f"  load: normalise {normalised:.1f} s ({len(raw) / normalised:,.0f}/s),"
        f" build set {built:.1f} s ({len(raw) / built:,.0f}/s)\n"
        f"  memory: RSS +{(rss1 - rss0) / 2**20:,.0f} MiB"
        f" ({(rss1 - rss0) / len(intel):,.0f} bytes per indicator)"
    )

    sample = records(raw, nrecords, rng)
    matcher = IntelMatcher([intel])

    def match_all() -> int:
        return sum(len(matcher.hits(rec)) for rec in sample)

    per_s, hits = rate(match_all, len(sample), seconds)
    fields = sum(
        2 + (2 if isinstance(r, Dns | Http) else 3 if isinstance(r, Ssl) else 0) for r in sample
    )
    print(
        f"  matcher: {per_s:,.0f} records/s ({per_s * fields / len(sample):,.0f} field"
        f" lookups/s), {hits:,} hits in {len(sample):,} records"
    )
    addresses = [r.resp_h for r in sample]
    names = [r.query for r in sample if isinstance(r, Dns) and r.query]
    ip_s, _ = rate(lambda: sum(1 for a in addresses if intel.lookup_ip(a)), len(addresses), seconds)
    dn_s, _ = rate(
        lambda: sum(1 for n in names for _ in intel.lookup_domain(n)), len(names), seconds
    )
    print(f"  raw lookups: ip {ip_s:,.0f}/s, domain (suffix walk) {dn_s:,.0f}/s")

    start = time.process_time()
    wire = encode_delta(snapshot(intel))
    encoded = time.process_time() - start
    start = time.process_time()
    decode_delta(wire)
    decoded = time.process_time() - start
    print(
        f"  full delta: {len(wire) / 2**20:,.1f} MiB ({len(wire) / len(intel):.0f} bytes per"
        f" indicator), encode {encoded:.2f} s, decode and check {decoded:.2f} s"
    )
    on_the_wire("full set", snapshot(intel))
    changed = one_percent(intel, rng)
    on_the_wire("1% changed", changed)
    start = time.process_time()
    apply(intel, changed)
    print(f"  agent applies the 1% delta in {time.process_time() - start:.2f} s")


def one_percent(intel: IndicatorSet, rng: random.Random) -> IntelDelta:
    """A delta changing 1% of the set: half removed, half new values."""
    n = max(len(intel) // 200, 1)
    removed = [IndicatorKey(i.type, i.value, i.source) for i in rng.sample(list(intel), n)]
    added = [make(kind, value, source="bench-new", confidence=80)
             for kind, value in raw_values(n, rng)]  # fmt: skip
    return IntelDelta(base=intel.version, version=intel.version + 1, added=added, removed=removed)


def on_the_wire(label: str, delta: IntelDelta) -> None:
    """What an agent is sent for ``delta``: the channel's parts (msgpack, zstd, base64)."""
    start = time.process_time()
    parts = [pack(part) for part in split(delta)]
    cost = time.process_time() - start
    raw = len(encode_delta(delta))
    sent = sum(len(p) for p in parts)
    print(
        f"  to agents, {label}: {len(delta.added):,} added, {len(delta.removed):,} removed;"
        f" msgpack {raw / 2**10:,.0f} KiB, sent {sent / 2**10:,.0f} KiB in {len(parts)}"
        f" part(s) (zstd + base64), cut and packed in {cost:.2f} s"
    )


if __name__ == "__main__":
    main()
