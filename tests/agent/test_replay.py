"""Replay: capture file -> JSON lines on stdout, a summary on stderr, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import msgspec

from a2z.agent.replay import iter_records, replay, run_replay
from a2z.records import Conn, Record

DATA = Path(__file__).resolve().parents[1] / "data"


def test_run_replay_prints_one_json_record_per_line_and_a_summary() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_replay(str(DATA / "q-in-q.pcap"), out, err) == 0
    lines = out.getvalue().splitlines()
    docs = [json.loads(line) for line in lines]
    assert {d["_path"] for d in docs} == {"conn"}
    assert {(d["id.orig_h"], d["id.resp_h"]) for d in docs} == {
        ("172.19.51.37", "172.19.51.63"),
        ("193.1.186.60", "224.2.127.254"),
    }
    decoded = [msgspec.json.decode(line, type=Record) for line in lines]
    assert all(isinstance(r, Conn) for r in decoded)
    summary = err.getvalue()
    for word in ("packets 5", "records: conn=2", "weird: none", "arp=1", "packets/s", "peak RSS"):
        assert word in summary


def test_run_replay_on_a_non_capture_prints_one_line_and_returns_2(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello, not a pcap\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_replay(str(bogus), out, err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert "not a pcap or pcapng file" in err.getvalue()


def test_run_replay_on_a_missing_file_returns_2(tmp_path: Path) -> None:
    err = io.StringIO()
    assert run_replay(str(tmp_path / "nope.pcap"), io.StringIO(), err) == 2
    assert "cannot open capture" in err.getvalue()


def test_replay_exposes_pipeline_and_capture_counters() -> None:
    records, pipeline, capture = replay(DATA / "nmap-vsn.pcap")
    out = list(records)
    assert pipeline.stats.packets == capture.packets > 0
    assert sum(pipeline.stats.records.values()) == len(out)


def test_iter_records_matches_replay_output() -> None:
    a = [(r.orig_h, r.orig_p, r.resp_h, r.resp_p) for r in iter_records(DATA / "v6.pcap")]
    b = [(r.orig_h, r.orig_p, r.resp_h, r.resp_p) for r in replay(DATA / "v6.pcap").records]
    assert a == b
    assert len(a) > 10


def test_replay_runs_as_a_module_free_subprocess_without_tracebacks() -> None:
    code = (
        "import sys; from a2z.agent.replay import run_replay; "
        "sys.exit(run_replay(sys.argv[1], sys.stdout, sys.stderr))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(DATA / "wikipedia.pcap")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    assert "Traceback" not in done.stderr
    assert len(done.stdout.splitlines()) > 0
