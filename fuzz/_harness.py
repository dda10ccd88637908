"""Shared plumbing of the fuzz targets: seeds from tests/data, and the atheris entry point.

Every target is ``fuzz/fuzz_<name>.py`` with ``test_one_input(data)`` and ``seeds()``; run it as
``python fuzz/fuzz_<name>.py --write-seeds DIR`` to write its seed corpus, or with libFuzzer
arguments (corpus dirs, ``-max_total_time=N``) to fuzz. ``make fuzz`` does both for each target.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
CAPTURE_SUFFIXES = (".pcap", ".pcapng")


def capture_files() -> Iterator[Path]:
    """Every capture under tests/data (good ones and tests/data/bad), sorted."""
    for path in sorted(DATA.rglob("*")):
        if path.suffix in CAPTURE_SUFFIXES and path.is_file():
            yield path


def run(test_one_input: Callable[[bytes], None], seeds: Callable[[], Iterator[bytes]]) -> None:
    """``--write-seeds DIR`` writes the seeds; anything else goes to atheris/libFuzzer."""
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        out = Path(sys.argv[2])
        out.mkdir(parents=True, exist_ok=True)
        n = 0
        for n, seed in enumerate(seeds(), 1):
            (out / f"seed-{n:05d}").write_bytes(seed)
        print(f"{n} seeds in {out}")
        return
    import atheris  # only the fuzzing run needs it, not the tests that reuse the targets

    atheris.instrument_all()  # coverage for everything imported so far (our decoders included)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
