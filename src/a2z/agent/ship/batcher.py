"""Groups records into numbered batches: the unit the server acknowledges."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from a2z.records import Batch, Record


@dataclass(slots=True)
class BatchLimits:
    """Where a batch is cut; the control path changes these while the batcher runs."""

    size: int = 500  # records per batch
    max_wait_s: float = 1.0  # a waiting batch is cut at the next tick after this long


def batches(
    records: Iterable[Record | None],
    *,
    agent_id: str,
    boot_epoch: int,
    size: int = 500,
    max_wait_s: float = 1.0,
    limits: BatchLimits | None = None,
) -> Iterator[Batch]:
    """Cut ``records`` into batches of at most ``size``, numbered from 1 within the epoch.

    A live source yields ``None`` as a clock tick when it has nothing: a batch that has waited
    ``max_wait_s`` is then cut short, so a quiet network still delivers within about a second.
    With ``limits``, its values are read afresh for every record (and override the others).
    """
    limits = limits or BatchLimits(size, max_wait_s)
    seq = 0
    chunk: list[Record] = []
    started = 0.0
    for record in records:
        if record is not None:
            if not chunk:
                started = time.monotonic()
            chunk.append(record)
            if len(chunk) < limits.size:
                continue
        elif not chunk or time.monotonic() - started < limits.max_wait_s:
            continue
        seq += 1
        yield Batch(
            agent_id=agent_id, boot_epoch=boot_epoch, seq=seq, sent_at=time.time(), records=chunk
        )
        chunk = []
    if chunk:
        yield Batch(
            agent_id=agent_id,
            boot_epoch=boot_epoch,
            seq=seq + 1,
            sent_at=time.time(),
            records=chunk,
        )
