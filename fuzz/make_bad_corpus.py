"""Re-create the synthetic part of tests/data/bad/: truncated and mutated captures.

``python fuzz/make_bad_corpus.py`` (deterministic: a fixed seed, inputs from tests/data). The
files named ``tcpdump-*`` and ``suricata-*`` in tests/data/bad are copies of those projects'
crash reproducers and are not made here. tests/agent/test_bad_corpus.py replays every file.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
OUT = DATA / "bad"
MAX_FRAMES = 40  # frames kept from each source capture
SOURCES = [  # small captures covering pcap/pcapng, both byte orders, several link types
    "wikipedia.pcap",
    "tcp-handshake-nano.pcap",
    "http1-with-cookies.pcapng",
    "v6.pcap",
    "frag-v4v6-udp-icmp.pcap",
    "q-in-q.pcap",
    "dnssec.pcap",
]


def pcap_records(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Split a little-endian classic pcap into its header and (record header, frame) pairs."""
    out = []
    off = 24
    while off + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        out.append((data[off : off + 16], data[off + 16 : off + 16 + caplen]))
        off += 16 + caplen
    return data[:24], out


def mutate_frames(data: bytes, rng: random.Random, flips: int) -> bytes:
    """The same capture with ``flips`` random bytes changed in each frame (headers intact)."""
    head, records = pcap_records(data)
    parts = [head]
    for rec, frame in records:
        buf = bytearray(frame)
        for _ in range(flips if buf else 0):
            # Mostly the first 64 bytes: that is where the headers our decoders read live.
            pos = (
                rng.randrange(min(len(buf), 64)) if rng.random() < 0.8 else rng.randrange(len(buf))
            )
            buf[pos] = rng.randrange(256)
        parts += [rec, bytes(buf)]
    return b"".join(parts)


def make(out: Path = OUT) -> list[Path]:
    """Write every synthetic bad capture; return their paths."""
    rng = random.Random(20261127)
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, bytes] = {
        "empty.pcap": b"",
        "not-a-capture.pcap": b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        "random-bytes.pcap": rng.randbytes(2048),
        "pcap-header-only-truncated.pcap": (DATA / "wikipedia.pcap").read_bytes()[:10],
    }
    for name in SOURCES:
        data = (DATA / name).read_bytes()
        if data[:4] == b"\xd4\xc3\xb2\xa1":  # keep the corpus small: the first frames will do
            head, records = pcap_records(data)
            data = head + b"".join(r + f for r, f in records[:MAX_FRAMES])
        stem = Path(name).stem
        ext = Path(name).suffix
        # Cut short: inside the first record header, inside a frame, two-thirds through.
        for label, cut in (("rechdr", 30), ("frame", 24 + 16 + 7), ("tail", len(data) * 2 // 3)):
            made[f"{stem}-cut-{label}{ext}"] = data[:cut]
        # A few random bytes changed anywhere, structure and all.
        buf = bytearray(data)
        for _ in range(12):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        made[f"{stem}-anybytes{ext}"] = bytes(buf)
        if ext == ".pcap" and data[:4] == b"\xd4\xc3\xb2\xa1":
            # Valid files whose frames are mutated: every decoder meets bad headers.
            made[f"{stem}-frames-light.pcap"] = mutate_frames(data, rng, 2)
            made[f"{stem}-frames-heavy.pcap"] = mutate_frames(data, rng, 12)
            # A record claiming a huge caplen, and one claiming zero.
            head, records = pcap_records(data)
            rec, frame = records[0]
            huge = rec[:8] + struct.pack("<II", 0x7FFFFFFF, len(frame)) + frame
            made[f"{stem}-huge-caplen.pcap"] = head + huge
            zero = rec[:8] + struct.pack("<II", 0, 1500)
            made[f"{stem}-zero-caplen.pcap"] = head + zero + b"".join(r + f for r, f in records)
            # An unknown link type in the file header.
            made[f"{stem}-bad-linktype.pcap"] = data[:20] + struct.pack("<I", 4242) + data[24:]
    pcapng = (DATA / "http1-with-cookies.pcapng").read_bytes()
    # A section whose first block length is odd, one with a bad byte-order magic.
    made["pcapng-odd-block-len.pcapng"] = pcapng[:4] + struct.pack("<I", 29) + pcapng[8:]
    made["pcapng-bad-bom.pcapng"] = pcapng[:8] + b"\x00\x00\x00\x00" + pcapng[12:]
    paths = []
    for name, blob in sorted(made.items()):
        path = out / f"gen-{name}"
        path.write_bytes(blob)
        paths.append(path)
    return paths


if __name__ == "__main__":
    print(f"{len(make())} files in {OUT}")
