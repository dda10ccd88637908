"""Offline replay: a capture file through the pipeline, records out as JSON lines.

``a2z agent replay FILE`` calls :func:`run_replay`; the agent service ships
:func:`iter_records` of a capture instead of printing it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Final, NamedTuple, TextIO

import msgspec

from a2z.agent.capture.errors import CaptureError
from a2z.agent.capture.pcap_file import CaptureReader, CaptureStats, open_capture
from a2z.agent.flows.table import FlowConfig
from a2z.agent.gc_policy import tune_gc
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols.analyzer import ProtocolConfig
from a2z.agent.summary import pairs, peak_rss_mib
from a2z.records import Record

if TYPE_CHECKING:  # the stage loads the detections: only when one is passed
    from a2z.agent.detect import EdgeDetector

LINES_PER_WRITE: Final = 1024  # records encoded and written per call by write_json_lines


class Replay(NamedTuple):
    """A replay in progress: iterate ``records``; the counters fill as it runs."""

    records: Iterator[Record]
    pipeline: Pipeline
    capture: CaptureStats


def replay(
    path: str | os.PathLike[str],
    config: FlowConfig | None = None,
    protocols: ProtocolConfig | None = None,
) -> Replay:
    """Open ``path`` and return a lazy record stream; raise CaptureError if it is no capture."""
    reader = open_capture(path)
    pipeline = Pipeline(config, protocols=protocols)
    return Replay(_records(reader, pipeline), pipeline, reader.stats)


def iter_records(
    path: str | os.PathLike[str],
    config: FlowConfig | None = None,
    protocols: ProtocolConfig | None = None,
) -> Iterator[Record]:
    """Just the records of a capture (raises CaptureError at once if it is no capture)."""
    return replay(path, config, protocols).records


def _records(reader: CaptureReader, pipeline: Pipeline) -> Iterator[Record]:
    feed_batch = pipeline.feed_batch
    take_records = pipeline.take_records
    try:
        # A window of the file at a time, its records handed to the pipeline where they lie;
        # the lists are of packets the reader had already built (ADR 0006, updates 2 and 4).
        for batch in reader.feed(pipeline):
            if batch:
                yield from feed_batch(batch)
            yield from take_records()
        yield from pipeline.flush()
    finally:
        reader.close()


def run_replay(path: str, out: TextIO, err: TextIO, detector: EdgeDetector | None = None) -> int:
    """Print one JSON record per line on ``out`` and a summary on ``err``; 0 ok, 2 bad file.

    With a ``detector``, its alerts are printed after the records that completed them.
    """
    started = time.perf_counter()
    tune_gc()  # a process of its own (the CLI): the collector settings are ours to choose
    try:
        records, pipeline, capture = replay(path)
    except CaptureError as exc:
        err.write(f"a2z agent replay: {exc}\n")
        return 2
    if detector is not None:
        records = detector.records(records)
    write_json_lines(records, out)
    out.flush()
    elapsed = time.perf_counter() - started
    err.write(summarize(path, pipeline, capture, elapsed))
    if detector is not None:
        err.write(describe_detection(detector))
    return 0


def write_json_lines(records: Iterable[Record], out: TextIO) -> None:
    """Write one JSON line per record, in order.

    Encoded ``LINES_PER_WRITE`` records per call (msgspec's ``encode_lines``) rather than an
    encode, a decode and two writes per record: on the attack mix (about 0.4 records per
    packet) the per-record calls were about 5 % of a replay (ADR 0006, update 3).
    """
    encode_lines = msgspec.json.Encoder().encode_lines
    pending = iter(records)
    write = out.write
    while batch := list(islice(pending, LINES_PER_WRITE)):
        write(encode_lines(batch).decode())


def describe_detection(detector: EdgeDetector) -> str:
    """The detection part of a summary: alerts by rule, suppression, evictions, failures."""
    stats = detector.stats
    sup = stats.suppression
    lines = [
        f"  alerts: {pairs(stats.emitted)}",
        f"  suppressed {sup.suppressed}  summaries {sup.summaries}"
        f"  state evictions {stats.evictions(detector.detections)}"
        f"  detection errors: {pairs(stats.errors)}",
    ]
    return "\n".join(lines) + "\n"


def summarize(path: str, pipeline: Pipeline, capture: CaptureStats, seconds: float) -> str:
    """The human summary of a replay: counts, rates and peak memory."""
    stats = pipeline.stats
    rate = stats.packets / seconds if seconds > 0 else 0.0
    lines = [
        f"replay {path}",
        f"  packets {stats.packets}  bytes {stats.bytes}  evictions {stats.evictions}",
        f"  capture: truncated {capture.truncated}  corrupt {capture.corrupt}"
        f"  skipped blocks {capture.skipped_blocks}  bad packets {capture.bad_packets}",
        f"  records: {pairs(stats.records)}",
        f"  weird: {pairs(stats.weirds)}",
        f"  ignored: {pairs(stats.ignored)}",
        f"  seconds {seconds:.3f}  packets/s {rate:,.0f}  peak RSS {peak_rss_mib():.1f} MiB",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "LINES_PER_WRITE",
    "Replay",
    "describe_detection",
    "iter_records",
    "replay",
    "run_replay",
    "summarize",
    "write_json_lines",
]
