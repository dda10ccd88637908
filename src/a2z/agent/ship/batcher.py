"""Groups records into numbered batches: the unit the server acknowledges."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice

from a2z.records import Batch, Record


def batches(
    records: Iterable[Record], *, agent_id: str, boot_epoch: int, size: int = 500
) -> Iterator[Batch]:
    """Cut ``records`` into batches of at most ``size``, numbered from 1 within the epoch."""
    it = iter(records)
    seq = 0
    while chunk := list(islice(it, size)):
        seq += 1
        yield Batch(
            agent_id=agent_id, boot_epoch=boot_epoch, seq=seq, sent_at=time.time(), records=chunk
        )
