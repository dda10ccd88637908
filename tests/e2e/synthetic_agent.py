"""Test-only agent process: the real service (spool + channel) fed synthetic conn records.

``python -m tests.e2e.synthetic_agent --config C --spool-dir S --count N [--rate R] [--resume]``

Record ``i`` has uid ``S<i>``, so a test can check the store holds each exactly once. With
``--resume`` the source starts after the highest record already in the spool, as a source with
a checkpoint would (a file tailer, say): what a killed agent had spooled is delivered from the
spool with its original ``(epoch, seq)``, and the rest comes new. Prints a JSON progress line
every 0.1 s and a final one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from a2z.agent.config import load_config
from a2z.agent.service import ship_records, spool_settings
from a2z.agent.ship.channel import ShipStats
from a2z.agent.ship.spool import Spool, SpoolSettings
from a2z.records import Conn, Record, decode_batch


def synthetic(start: int, stop: int) -> Iterator[Record]:
    """Conn records ``start`` .. ``stop - 1``, each with uid ``S<i>``."""
    for i in range(start, stop):
        yield Conn(
            ts=1_700_000_000.0 + i / 1000, uid=f"S{i}", orig_h=f"10.1.{i // 256 % 256}.{i % 256}",
            orig_p=1024 + i % 64000, resp_h="192.0.2.10", resp_p=443, proto="tcp",
            conn_state="SF", duration=0.25, orig_bytes=517, resp_bytes=4096, history="ShADadFf",
            orig_pkts=8, resp_pkts=9, orig_ip_bytes=937, resp_ip_bytes=4564,
        )  # fmt: skip


def spooled_through(spool_dir: Path) -> tuple[int, int]:
    """One past the highest record index the spool holds, and the regions it quarantined."""
    if not spool_dir.exists():
        return 0, 0
    with Spool(SpoolSettings(directory=spool_dir)) as spool:
        highest = -1
        for taken in iter(spool.take, None):
            for rec in decode_batch(taken.frame).records:
                highest = max(highest, int(rec.uid[1:]))
        return highest + 1, spool.stats.quarantined_regions


def report(stats: ShipStats) -> None:
    spool = stats.spool
    line = {
        "acked": stats.records_acked,
        "batches_acked": stats.batches_acked,
        "reconnects": stats.reconnects,
        "resends": stats.resends,
        "produced": spool.total("produced").records if spool else 0,
        "recovered": spool.total("recovered").records if spool else 0,
        "pending": spool.total("pending").records if spool else 0,
        "dropped": spool.total("dropped").records if spool else 0,
        "quarantined": spool.quarantined_regions if spool else 0,
    }
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--spool-dir", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    start, quarantined = spooled_through(args.spool_dir) if args.resume else (0, 0)
    print(json.dumps({"start": start, "quarantined_at_resume": quarantined}), flush=True)
    stats = asyncio.run(
        ship_records(
            config,
            synthetic(start, args.count),
            rate=args.rate,
            spool=spool_settings(config, spool_dir=args.spool_dir),
            progress=report,
            progress_interval_s=0.1,
        )
    )
    print(json.dumps({"done": True, "acked": stats.records_acked}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
