"""Live capture cost on a veth pair (root): the TPACKET_V3 ring against per-packet recv().

Two throwaway network namespaces joined by a veth; a sender in one blasts small UDP datagrams,
a capture in the other counts them. Compared: our AfPacketSource (mmap ring, a block at a time)
and the simplest alternative, an AF_PACKET socket read with one recv() per packet (Python has no
recvmmsg). Then the whole agent (``python -m a2z.agent.live``) at a steady 2,000 packets/s, as
the issue's budget states it: CPU as a share of one core.

Run: ``sudo .venv/bin/python bench/bench_capture.py`` (``make bench-agent`` runs it too when
root). Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.agent.netns import VethPair, veth_pair  # noqa: E402 - the bench reuses the test rig

PORT = 7777


def capture_child(method: str, interface: str) -> None:
    """Count frames with ``method`` until 1 s passes without one; print CPU and counts."""
    from a2z.agent.capture.af_packet import AfPacketSource
    from a2z.agent.capture.bpf import compile_bpf
    from a2z.agent.capture.packet import RawPacket

    bpf = f"udp dst port {PORT}"
    seen = 0
    if method == "ring":
        source = AfPacketSource(interface, bpf=bpf)
        print("ready", flush=True)
        cpu0 = time.process_time()
        last = time.monotonic() + 30  # wait up to 30 s for the first frame
        while time.monotonic() - last < 1.0:
            got = len(source.batch(0.1))
            if got:
                seen += got
                last = time.monotonic()
        cpu = time.process_time() - cpu0
        drops = source.read_counters().dropped
        source.close()
    else:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        prog = compile_bpf(bpf, 1)
        insns = ctypes.create_string_buffer(prog.pack())
        fprog = struct.pack("HL", len(prog), ctypes.addressof(insns))
        sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        sock.bind((interface, 3))
        sock.settimeout(0.1)
        print("ready", flush=True)
        cpu0 = time.process_time()
        buf = bytearray(65536)
        view = memoryview(buf)
        last = time.monotonic() + 30
        while time.monotonic() - last < 1.0:
            try:
                n = sock.recv_into(buf)
            except TimeoutError:
                continue
            RawPacket(time.time(), 1, bytes(view[:n]), n)  # what a source must yield
            seen += 1
            last = time.monotonic()
        cpu = time.process_time() - cpu0
        drops = struct.unpack("=II", sock.getsockopt(263, 6, 8))[1]  # PACKET_STATISTICS
        sock.close()
    print(json.dumps({"packets": seen, "cpu": cpu, "drops": drops}))


def sender(host: str, count: int, rate: float) -> None:
    """Send ``count`` 64-byte UDP datagrams to ``host`` (at ``rate``/s, 0 = as fast as possible)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * 64
    if rate <= 0:
        for _ in range(count):
            sock.sendto(payload, (host, PORT))
        return
    started = time.monotonic()
    batch = max(int(rate / 100), 1)  # a burst every 10 ms
    for i in range(0, count, batch):
        for j in range(min(batch, count - i)):
            # 50 source "flows" by destination port, so the agent has real flow work to do
            sock.sendto(payload, (host, PORT + (i + j) % 50))
        pause = started + (i + batch) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def _py(ns: str, pair: VethPair, *args: str) -> list[str]:
    return pair.exec_argv(ns, [sys.executable, __file__, *args])


def compare_methods(pair: VethPair, count: int) -> None:
    print(f"\ncapture only: {count:,} UDP frames of 106 bytes, sent as fast as Python can")
    print(f"  {'method':<26} {'captured':>9} {'kernel drops':>12} {'CPU us/packet':>14}")
    for method in ("ring", "recv"):
        child = subprocess.Popen(
            _py(pair.b_ns, pair, "--capture-child", method, pair.b_if),
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        subprocess.run(
            _py(pair.a_ns, pair, "--send", pair.b_ip4, str(count), "0"), timeout=120, check=True
        )
        out, _ = child.communicate(timeout=60)
        stats = json.loads(out.strip().splitlines()[-1])
        label = "TPACKET_V3 ring (ours)" if method == "ring" else "recv() per packet"
        per = stats["cpu"] / max(stats["packets"], 1) * 1e6
        print(f"  {label:<26} {stats['packets']:>9,} {stats['drops']:>12,} {per:>14.2f}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def agent_at_rate(pair: VethPair, rate: float, seconds: float) -> None:
    """The whole agent at a steady rate: CPU share of one core while the traffic flows."""
    count = int(rate * seconds)
    argv = [sys.executable, "-m", "a2z.agent.live", "-i", pair.b_if]
    argv += ["--bpf", f"udp portrange {PORT}-{PORT + 49}"]
    proc = subprocess.Popen(
        pair.exec_argv(pair.b_ns, argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("listening")
    time.sleep(1.0)
    cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
    subprocess.run(
        _py(pair.a_ns, pair, "--send", pair.b_ip4, str(count), str(rate)),
        timeout=seconds * 3,
        check=True,
    )
    time.sleep(0.2)
    cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
    proc.send_signal(signal.SIGINT)
    summary = proc.stderr.read()
    proc.wait(timeout=30)
    proc.stderr.close()
    cpu, wall = cpu1 - cpu0, t1 - t0
    print(f"\nwhole agent (capture, pipeline, JSON out) at {rate:,.0f} packets/s, 50 UDP flows:")
    for line in summary.splitlines():
        if line.strip().startswith(("packets", "kernel")):
            print("  " + line.strip())
    print(
        f"  CPU {cpu:.2f} s in {wall:.1f} s = {cpu / wall * 100:.1f} % of one core "
        f"({cpu / count * 1e6:.0f} us per packet, idle wake-ups included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="live capture cost on a veth pair (root)")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--capture-child", nargs=2, metavar=("METHOD", "IFACE"))
    parser.add_argument("--send", nargs=3, metavar=("HOST", "COUNT", "RATE"))
    args = parser.parse_args()
    if args.capture_child:
        method, iface = args.capture_child
        capture_child(method, iface)
        return
    if args.send:
        host, count, rate = args.send
        sender(host, int(count), float(rate))
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_capture needs root (network namespaces, AF_PACKET)")
    with veth_pair("a2zbench") as pair:
        compare_methods(pair, args.count)
        agent_at_rate(pair, args.rate, args.seconds)


if __name__ == "__main__":
    main()
