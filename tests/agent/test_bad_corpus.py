"""The bad-capture corpus (tests/data/bad) end to end, and the fuzz targets on their seeds.

tests/data/bad holds other projects' crash reproducers (tcpdump, Suricata) and truncated or
mutated copies of our captures (fuzz/make_bad_corpus.py). Replaying any of them must give
records or one clear error line, never an exception.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from a2z.agent.replay import run_replay

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad"
BAD_FILES = sorted(p for p in BAD.iterdir() if p.suffix in (".pcap", ".pcapng"))
FUZZ_TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in (ROOT / "fuzz").glob("fuzz_*.py"))


def test_the_bad_corpus_is_all_there() -> None:
    assert len(BAD_FILES) >= 60
    assert {"decode", "capture", "pipeline", "reassembly"} <= set(FUZZ_TARGETS)


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.name for p in BAD_FILES])
def test_replaying_a_bad_capture_gives_records_or_one_clear_error(path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = run_replay(str(path), out, err)  # an exception here is the failure we look for
    if rc == 2:
        assert out.getvalue() == ""
        (line,) = err.getvalue().splitlines()
        assert line.startswith(f"a2z agent replay: {path}")
    else:
        assert rc == 0
        for line in out.getvalue().splitlines():
            assert json.loads(line)["_path"]


def _target(name: str) -> ModuleType:
    fuzz_dir = str(ROOT / "fuzz")
    if fuzz_dir not in sys.path:
        sys.path.insert(0, fuzz_dir)  # the targets import their shared _harness module
    return importlib.import_module(f"fuzz_{name}")


@pytest.mark.parametrize("name", FUZZ_TARGETS)
def test_fuzz_target_runs_its_seeds_and_the_bad_corpus_cleanly(name: str) -> None:
    target = _target(name)
    one: Callable[[bytes], None] = target.test_one_input
    seeds: Iterator[bytes] = target.seeds()
    count = 0
    for seed in seeds:
        one(seed)
        count += 1
    assert count > 0
    for path in BAD_FILES:
        one(path.read_bytes()[:65536])
