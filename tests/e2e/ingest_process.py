"""A headless ingest worker for the fault tests: ``python -m tests.e2e.ingest_process CONFIG``.

CONFIG is JSON: ``db_url``, ``bus_url``, ``data_dir`` and the ``jetstream`` settings. The process
is what ``a2z server --role ingest`` runs: ``run_workers`` until SIGTERM (or kill -9).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from a2z.server.config import JetStreamSettings, ServerRole, Settings
from a2z.server.workers import run_workers


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    jetstream: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in config["jetstream"].items()
    }
    settings = Settings(
        data_dir=Path(config["data_dir"]),
        db_url=config["db_url"],
        bus_url=config["bus_url"],
        roles=frozenset({ServerRole.INGEST}),
        jetstream=JetStreamSettings(**jetstream),
        pool_size=int(jetstream.get("concurrency", 4)) + 1,
        port=0,  # /metrics on any free port
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run_workers(settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
