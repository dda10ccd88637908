#!/usr/bin/env python3
"""Record an office's ordinary traffic with real tools: the anomaly model's benign baseline.

Eight workstations (10.77.0.101-108, one client namespace) look names up with ``dig`` and load
pages with ``curl`` (HTTP on 80 and 8080, HTTPS on 443) from servers in a second namespace, at
random seeded intervals, for ``--seconds``; tcpdump records the server side. The result is
``bench/data/detect/benign-office.pcap`` (``make eval-detection`` trains and validates the
anomaly model on it). Needs root, iproute2, tcpdump, curl, dig and openssl.

    sudo .venv/bin/python scripts/make-benign-office.py [--seconds 300] [OUT.pcap]
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.agent.netns import run, veth_pair  # noqa: E402

CLIENTS = [f"10.77.0.{i}" for i in range(101, 109)]
ZONE = {  # what the office's resolver answers; anything else is NXDOMAIN (typos happen)
    "intranet.example.com", "www.example.com", "mail.example.com", "wiki.example.com",
    "git.example.com", "cdn.example.net", "api.example.org", "static.example.net",
    "calendar.example.com", "chat.example.com",
}  # fmt: skip
TYPOS = ("intranet.exmaple.com", "wikki.example.com", "gti.example.com")
PAGES = ("/", "/index.html", "/style.css", "/app.js", "/api.json", "/news.html")


def serve_dns(addr: str, answer: str) -> None:
    """Answer A queries for ``ZONE`` with ``answer``, NXDOMAIN for other names."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    while True:
        query, peer = sock.recvfrom(4096)
        if len(query) < 12:
            continue
        end, labels = 12, []
        while end < len(query) and query[end] != 0:
            labels.append(query[end + 1 : end + 1 + query[end]].decode("ascii", "replace"))
            end += query[end] + 1
        question = query[12 : end + 5]
        known = ".".join(labels).lower() in ZONE
        flags = bytes([0x80 | (query[2] & 0x01), 0x80 if known else 0x83])
        counts = struct.pack("!HHHH", 1, 1 if known else 0, 0, 0)
        reply = query[:2] + flags + counts + question
        if known:  # pointer to the question's name, A, IN, TTL 300, 4 bytes
            reply += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(answer)
        sock.sendto(reply, peer)


def workstation(src: str, server: str, seconds: float, seed: int) -> None:
    """One person's machine: lookups and page loads at random intervals."""
    rng = random.Random(seed)
    mean_gap = rng.uniform(3.0, 10.0)
    names = rng.sample(sorted(ZONE), 5)  # each person uses a few services
    deadline = time.monotonic() + seconds
    quiet = ["-s", "--max-time", "5", "--interface", src]
    out = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    while time.monotonic() < deadline:
        time.sleep(rng.expovariate(1.0 / mean_gap))
        roll = rng.random()
        name = rng.choice(names)
        dig = ["dig", "-b", src, f"@{server}", "+tries=1", "+time=2"]
        if roll < 0.5:  # a page load: the lookup, then a few resources on one connection
            subprocess.run([*dig, name, "A"], capture_output=True, check=False)
            port = rng.choice((80, 8080))
            paths = rng.sample(PAGES, rng.randint(1, 4))  # one connection, keep-alive
            urls = [arg for p in paths for arg in (f"http://{server}:{port}{p}", "-o", "/dev/null")]
            subprocess.run(["curl", *quiet, *urls], **out)
        elif roll < 0.75:
            subprocess.run([*dig, name, "A"], capture_output=True, check=False)
            subprocess.run(["curl", *quiet, "-k", f"https://{server}/"], **out)
        elif roll < 0.95:
            lookups = [arg for n in rng.sample(names, rng.randint(1, 3)) for arg in (n, "A")]
            subprocess.run([*dig, *lookups], capture_output=True, check=False)
        else:  # a typo or a stale link
            subprocess.run([*dig, rng.choice(TYPOS), "A"], capture_output=True, check=False)
            subprocess.run(["curl", *quiet, f"http://{server}/old-page.html"], **out)


def office(server: str, seconds: float) -> None:
    threads = [
        threading.Thread(target=workstation, args=(src, server, seconds, i))
        for i, src in enumerate(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def record(out: Path, seconds: float) -> None:
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp, veth_pair("a2zoff") as pair:
        www = Path(tmp) / "www"
        www.mkdir()
        for page in PAGES[1:]:
            (www / page.lstrip("/")).write_text(
                f"{page} " + "x" * random.Random(page).randint(200, 2_000)
            )
        for src in CLIENTS:
            run(["ip", "-n", pair.a_ns, "addr", "add", f"{src}/24", "dev", pair.a_if])
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        subject = "/CN=intranet.example.com"
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", subject, "-keyout", str(key), "-out", str(cert)])  # fmt: skip
        b = pair.b_ip4
        servers = [
            [py, "-m", "http.server", "80", "--bind", b, "--directory", str(www)],
            [py, "-m", "http.server", "8080", "--bind", b, "--directory", str(www)],
            ["openssl", "s_server", "-quiet", "-accept", f"{b}:443", "-www",
             "-cert", str(cert), "-key", str(key)],
            [py, __file__, "--dns", b],
        ]  # fmt: skip
        procs = [
            subprocess.Popen(pair.exec_argv(pair.b_ns, argv), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for argv in servers
        ]  # fmt: skip
        dump = subprocess.Popen(
            pair.exec_argv(pair.b_ns, ["tcpdump", "-i", pair.b_if, "-U", "-n", "-s", "0",
                                       "-w", str(out)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(2)  # servers and tcpdump up
            subprocess.run(
                pair.exec_argv(pair.a_ns, [py, __file__, "--office", b, "--seconds", str(seconds)]),
                check=True,
            )
            time.sleep(1)
        finally:
            for proc in [dump, *procs]:
                proc.terminate()
                proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    default = ROOT / "bench" / "data" / "detect" / "benign-office.pcap"
    parser.add_argument("out", nargs="?", type=Path, default=default)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--dns", help=argparse.SUPPRESS)  # internal: the resolver, in namespace b
    parser.add_argument("--office", help=argparse.SUPPRESS)  # internal: the clients, namespace a
    args = parser.parse_args()
    if args.dns:
        serve_dns(args.dns, args.dns)
    elif args.office:
        office(args.office, args.seconds)
    else:
        record(args.out.resolve(), args.seconds)


if __name__ == "__main__":
    main()
