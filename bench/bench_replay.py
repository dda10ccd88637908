"""``make bench-agent``: the agent pipeline against tshark on the same capture files.

Builds the captures in a temporary directory: the bundled attack capture (real nmap, hping3,
dig, curl traffic) repeated to a million packets (``--packets``), and a TCP-heavy corpus capture
(an SMB2 file transfer from suricata-verify: long flows, full-size segments) repeated likewise.
Each repetition is shifted in time past every flow timeout, so it is new flows, as in a long
real capture. Then, per capture: our full pipeline (decode, reassembly, flows, protocol
analyzers, records encoded to JSON) in a fresh process, and tshark on the same file, once
computing conversation statistics and once extracting IP/DNS/HTTP/TLS fields; tcpdump -nn is
shown for scale. Wall time, CPU time and peak RSS come from each child.

Last, the memory worst case: a SYN flood with random source addresses and ports (every packet
a new flow; ``--flood-flows``, default 1.2 million) written by a small struct-based pcap writer
into the same temporary directory, replayed with the default bounded flow table; it reports
peak RSS and the flows evicted because the table was full.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACK = ROOT / "src" / "a2z" / "demo" / "data" / "attack.pcap"
TCP_HEAVY = ROOT / "bench" / "data" / "smb2-peter.pcap"  # one 30 s SMB2 session, 511 kB
GAP_SECONDS = 400.0  # between repetitions: longer than every flow timeout (TCP's is 300 s)

TSHARK_FIELDS = [
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "dns.qry.name",
    "dns.qry.type",
    "dns.flags.rcode",
    "http.request.method",
    "http.host",
    "http.request.uri",
    "http.response.code",
    "tls.handshake.extensions_server_name",
]


@dataclass(frozen=True)
class Run:
    """One measured run over one file."""

    tool: str
    seconds: float  # wall clock
    cpu: float  # user + system CPU seconds of the child
    rss_mib: float  # peak resident set of the child
    packets: int
    records: int = 0  # records we emitted (0 for the reference tools)
    wire_bytes: int = 0
    evictions: int = 0  # flows we emitted early because the flow table was full
    max_flows: int = 0  # the flow table's bound in that run

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0


def build_capture(source: Path, out: Path, packets: int) -> tuple[int, int]:
    """Repeat ``source`` (classic pcap) into ``out`` until it holds ``packets``; (frames, bytes)."""
    data = source.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    scale = 1_000_000_000 if nano else 1_000_000
    rec = struct.Struct(endian + "IIII")
    records: list[tuple[int, bytes]] = []  # (ticks, record bytes after the timestamp)
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _wire = rec.unpack_from(data, off)
        records.append((sec * scale + frac, data[off + 8 : off + 16 + caplen]))
        off += 16 + caplen
    first, last = records[0][0], records[-1][0]
    period = last - first + int(GAP_SECONDS * scale)
    frames = wire = 0
    with out.open("wb") as fh:
        fh.write(data[:24])
        rep = 0
        while frames < packets:
            shift = rep * period
            for ticks, rest in records:
                if frames == packets:
                    break
                sec, frac = divmod(ticks + shift, scale)
                fh.write(struct.pack(endian + "II", sec, frac))
                fh.write(rest)
                frames += 1
                wire += struct.unpack_from(endian + "I", rest, 4)[0]
            rep += 1
    return frames, wire


FLOOD_PPS = 100_000  # packet rate of the flood in capture time (hping3 --flood on one core)
_FLOOD_RECORD = struct.Struct("<IIII")
_FLOOD_FRAME = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH")


def build_syn_flood(out: Path, packets: int, seed: int = 1) -> tuple[int, int]:
    """Write ``packets`` TCP SYNs, each from a random address and port: one new flow apiece.

    Ethernet/IPv4/TCP, 54-byte frames, ``FLOOD_PPS`` packets per second of capture time, to one
    victim (10.9.9.9:80). Addresses are drawn from 10.0.0.0/8 and ports from 1024-65535 (about
    1e12 pairs: repeats among a million draws are a handful, counted as distinct flows by the
    output anyway). Returns (frames, wire bytes).
    """
    rng = random.Random(seed)  # a reproducible capture
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    victim = bytes([10, 9, 9, 9])
    start_us = 1_700_000_000 * 1_000_000
    size = _FLOOD_FRAME.size
    with out.open("wb") as fh:
        fh.write(header)
        chunk: list[bytes] = []
        for i in range(packets):
            src = (0x0A000000 | rng.getrandbits(24)).to_bytes(4, "big")
            sport = rng.randint(1024, 65535)
            seq = rng.getrandbits(32)
            sec, usec = divmod(start_us + i * 1_000_000 // FLOOD_PPS, 1_000_000)
            chunk.append(_FLOOD_RECORD.pack(sec, usec, size, size))
            chunk.append(
                _FLOOD_FRAME.pack(
                    b"\x02\x00\x00\x00\x00\x02",
                    b"\x02\x00\x00\x00\x00\x01",
                    0x0800,
                    0x45,
                    0,
                    40,
                    i & 0xFFFF,
                    0,
                    64,
                    6,
                    0,
                    src,
                    victim,
                    sport,
                    80,
                    seq,
                    0,
                    0x50,
                    0x02,  # SYN
                    64240,
                    0,
                    0,
                )
            )
            if len(chunk) >= 20_000:
                fh.write(b"".join(chunk))
                chunk.clear()
        fh.write(b"".join(chunk))
    return packets, packets * size


def measure(
    argv: list[str], stdout: int | None = subprocess.DEVNULL
) -> tuple[float, float, float, bytes]:
    """Run ``argv``; (wall seconds, CPU seconds, peak RSS MiB, captured stdout if piped)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL)
    output = proc.stdout.read() if proc.stdout is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.stdout is not None:
        proc.stdout.close()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with exit code {proc.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


def run_ours(path: Path, repeat: int, max_flows: int | None = None) -> Run:
    """The pipeline in a fresh interpreter (``--child``), so its RSS and CPU are its own.

    The child times the replay itself (interpreter start-up and imports are not the pipeline);
    with ``repeat`` > 1 the fastest run counts, which filters out a busy neighbour.
    """
    runs = []
    for _ in range(repeat):
        argv = [sys.executable, __file__, "--child", str(path)]
        if max_flows is not None:
            argv += ["--max-flows", str(max_flows)]
        _, _, rss, output = measure(argv, stdout=subprocess.PIPE)
        stats = json.loads(output)
        runs.append(
            Run(
                "a2z pipeline",
                stats["seconds"],
                stats["cpu"],
                rss,
                stats["packets"],
                stats["records"],
                stats["bytes"],
                stats["evictions"],
                stats["max_flows"],
            )
        )
    return min(runs, key=lambda run: run.seconds)


def child(path: str, max_flows: int | None) -> None:
    """Replay ``path`` exactly as ``a2z agent replay`` does, records to /dev/null; print stats."""
    from a2z.agent.flows.table import FlowConfig
    from a2z.agent.gc_policy import tune_gc
    from a2z.agent.replay import replay, write_json_lines

    started = time.perf_counter()
    cpu_started = time.process_time()
    tune_gc()  # as run_replay does
    config = FlowConfig() if max_flows is None else FlowConfig(max_flows=max_flows)
    records, pipeline, _capture = replay(path, config)
    with open(os.devnull, "w") as sink:
        write_json_lines(records, sink)  # as run_replay writes them
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stats = pipeline.stats
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "packets": stats.packets,
                "bytes": stats.bytes,
                "records": sum(stats.records.values()),
                "evictions": stats.evictions,
                "max_flows": pipeline.table.config.max_flows,
            }
        )
    )


def run_tools(path: Path, packets: int) -> list[Run]:
    """tshark (conversations; field extraction) and tcpdump -nn over the same file."""
    runs = []
    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("tshark is not installed (apt-get install tshark): it is the reference")
    base = [tshark, "-n", "-r", str(path)]
    conv = [*base, "-q", "-z", "conv,tcp", "-z", "conv,udp"]
    seconds, cpu, rss, _ = measure(conv)
    runs.append(Run("tshark -z conv,tcp/udp", seconds, cpu, rss, packets))
    fields = [*base, "-T", "fields"]
    for name in TSHARK_FIELDS:
        fields += ["-e", name]
    seconds, cpu, rss, _ = measure(fields)
    runs.append(Run("tshark -T fields (IP,DNS,HTTP,TLS)", seconds, cpu, rss, packets))
    tcpdump = shutil.which("tcpdump")
    if tcpdump is not None:
        seconds, cpu, rss, _ = measure([tcpdump, "-nn", "-r", str(path)])
        runs.append(Run("tcpdump -nn", seconds, cpu, rss, packets))
    return runs


def report(title: str, frames: int, wire: int, runs: list[Run]) -> None:
    """One table per capture; ratios are ours over theirs on CPU time (robust on a busy box)."""
    ours = runs[0]
    print(f"\n{title}: {frames:,} packets, {wire / 1e6:,.1f} MB on the wire")
    print(
        f"  {'tool':<36} {'packets/s':>10} {'pkts/CPU-s':>10} {'Mbit/s':>7} {'records/s':>9} "
        f"{'CPU s/Mpkt':>10} {'peak RSS':>9} {'ours/x':>6}"
    )
    for run in runs:
        mbit = wire * 8 / run.seconds / 1e6 if run.seconds else 0.0
        recs = f"{run.records / run.seconds:,.0f}" if run.records else "-"
        ratio = f"{run.cpu / ours.cpu:.1f}" if run is not ours and ours.cpu else "-"
        print(
            f"  {run.tool:<36} {run.pps:>10,.0f} {run.packets / run.cpu:>10,.0f} {mbit:>7,.0f} "
            f"{recs:>9} {run.cpu / run.packets * 1e6:>10.1f} {run.rss_mib:>5.0f} MiB {ratio:>6}"
        )


def report_flood(frames: int, wire: int, ours: Run, target_mb: float = 50.0) -> None:
    """The memory worst case: peak RSS against the issue's target (50 MB = 47.7 MiB)."""
    target_mib = target_mb * 1e6 / 2**20
    print(
        f"\nSYN flood, random source address and port: {frames:,} packets = {frames:,} "
        f"distinct flows, {FLOOD_PPS:,} packets/s of capture time, {wire / 1e6:,.1f} MB"
    )
    verdict = "within" if ours.rss_mib <= target_mib else "OVER"
    print(
        f"  a2z pipeline: peak RSS {ours.rss_mib:.1f} MiB = {ours.rss_mib * 2**20 / 1e6:.1f} MB "
        f"({verdict} the {target_mb:.0f} MB target), flow table bound {ours.max_flows:,}, "
        f"evictions {ours.evictions:,}, "
        f"conn records {ours.records:,}"
    )
    print(
        f"  {ours.packets / ours.cpu:,.0f} packets per CPU second, "
        f"{ours.cpu / ours.packets * 1e6:.1f} CPU s per million packets"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets per capture")
    parser.add_argument("--repeat", type=int, default=1, help="runs of ours; the best counts")
    parser.add_argument(
        "--flood-flows", type=int, default=1_200_000, help="SYN-flood packets (0 = skip)"
    )
    parser.add_argument("--flood-only", action="store_true", help="run only the SYN flood")
    parser.add_argument(
        "--max-flows", type=int, help="flow-table bound for our runs (default: the agent's)"
    )
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.max_flows)
        return
    version = sys.version.split()[0]
    load = os.getloadavg()[0]
    print(f"agent pipeline vs tshark, {args.packets:,} packets per capture, python {version}")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at start (wall figures suffer if busy)")
    captures = [
        ("attack mix (attack.pcap repeated)", ATTACK),
        ("TCP-heavy (smb2-peter.pcap repeated)", TCP_HEAVY),
    ]
    with tempfile.TemporaryDirectory(prefix="a2z-bench-") as tmp:
        for title, source in [] if args.flood_only else captures:
            path = Path(tmp) / f"{source.stem}-x.pcap"
            frames, wire = build_capture(source, path, args.packets)
            runs = [run_ours(path, args.repeat, args.max_flows), *run_tools(path, frames)]
            report(title, frames, wire, runs)
            path.unlink()
        if args.flood_flows > 0:
            path = Path(tmp) / "syn-flood.pcap"
            frames, wire = build_syn_flood(path, args.flood_flows)
            report_flood(frames, wire, run_ours(path, args.repeat, args.max_flows))
            path.unlink()


if __name__ == "__main__":
    main()
