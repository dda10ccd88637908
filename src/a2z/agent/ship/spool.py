"""The agent's disk spool: batcher -> spool -> channel. Wire frames wait here until acked.

It bounds the backlog in bytes, survives restarts and kill -9, and drops by priority when full.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from a2z.records import MAX_FRAME_BYTES, Batch, encode_batch

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB, the cap issue 5 asks for
DEFAULT_FSYNC_INTERVAL_S = 0.5  # Vector's disk buffer syncs every 500 ms by default

Key = tuple[int, int]
"""A batch's identity on the wire and in the spool: ``(boot_epoch, seq)``."""


class Priority(enum.IntEnum):
    """What a batch is worth keeping: when the spool is full, the lowest class goes first."""

    METRICS = 0  # heartbeats and agent metrics: the next one supersedes them
    FLOW = 1  # network logs (conn, dns, http, ssl, weird, ...)
    ALERT = 2  # detections: kept longest


METRICS_PATHS = frozenset({"heartbeat", "metrics", "stats"})
"""Record types (``_path``) that are agent telemetry rather than network evidence."""


def classify(batch: Batch) -> Priority:
    """A batch's class: any alert makes it an alert batch; telemetry alone is metrics."""
    paths = {type(rec).__struct_config__.tag for rec in batch.records}
    if "alert" in paths:
        return Priority.ALERT
    if not paths or paths <= METRICS_PATHS:
        return Priority.METRICS
    return Priority.FLOW


class SpoolError(Exception):
    """Root of spool errors: the spool directory cannot be used."""


class SpoolBusy(SpoolError):
    """Another process holds the spool directory's lock."""


class SpoolOrderError(SpoolError, ValueError):
    """An append whose ``(boot_epoch, seq)`` does not follow every key the spool has seen."""


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    """Where the spool lives and how much it may hold."""

    directory: Path
    max_bytes: int = DEFAULT_MAX_BYTES  # cap on segment bytes; past it, drop by priority
    segment_bytes: int | None = None  # roll size; default max_bytes/64 within [64 KiB, 16 MiB]
    fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S  # 0: each append; >0: period; <0: never

    def roll_bytes(self) -> int:
        """Segment size: small enough that evicting one segment loses little."""
        if self.segment_bytes is not None:
            return self.segment_bytes
        return min(16 << 20, max(64 << 10, self.max_bytes // 64))


@dataclass(slots=True)
class Tally:
    """A count of batches and of the records they carry."""

    batches: int = 0
    records: int = 0

    def add(self, records: int) -> None:
        """Count one batch of ``records`` records."""
        self.batches += 1
        self.records += records


@dataclass(slots=True)
class ClassStats:
    """One priority class's fate counters since the spool was opened.

    ``recovered + produced == delivered + dropped + rejected + corrupt + pending`` always holds.
    """

    recovered: Tally = field(default_factory=Tally)  # found on disk at open, not yet settled
    produced: Tally = field(default_factory=Tally)  # appended (or refused at append) since open
    delivered: Tally = field(default_factory=Tally)  # acked by the server
    dropped: Tally = field(default_factory=Tally)  # evicted, or refused, because of the cap
    rejected: Tally = field(default_factory=Tally)  # refused for good by the server
    corrupt: Tally = field(default_factory=Tally)  # failed its CRC when read back for sending
    pending: Tally = field(default_factory=Tally)  # still in the spool


@dataclass(slots=True)
class SpoolStats:
    """Counters for the agent's summary and heartbeat."""

    classes: dict[Priority, ClassStats] = field(
        default_factory=lambda: {p: ClassStats() for p in Priority}
    )
    bytes: int = 0  # segment bytes on disk now
    quarantined_regions: int = 0  # torn or corrupt byte ranges moved to quarantine/
    quarantined_bytes: int = 0

    def total(self, name: str) -> Tally:
        """One counter summed over the classes, e.g. ``total("dropped")``."""
        out = Tally()
        for cls in self.classes.values():
            part: Tally = getattr(cls, name)
            out.batches += part.batches
            out.records += part.records
        return out


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one spooled batch lives."""

    key: Key
    priority: Priority
    records: int
    segment: int  # segment id
    offset: int  # of the record header in the segment file
    length: int  # frame bytes after the header
    crc: int  # CRC32 of the frame


@dataclass(frozen=True, slots=True)
class Spooled:
    """A batch taken from the spool for sending."""

    entry: Entry
    frame: bytes
    resend: bool  # it was sent before on a connection that ended without its ack


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: whether the batch was kept, and which batches it evicted."""

    stored: bool
    evicted: list[Key]


@dataclass(slots=True)
class _Segment:
    id: int
    priority: Priority
    path: Path
    fd: int
    size: int
    keys: list[Key] = field(default_factory=list)  # every entry in the file, in order
    live: int = 0  # entries not yet settled
    inflight: int = 0  # entries taken and not settled or rewound


# Record header: magic, version, class, reserved, frame length, record count, boot_epoch, seq,
# frame CRC32, header CRC32 (of the 36 bytes before it). The header has its own CRC so that a
# flipped bit in one frame costs that batch only: the framing after it can still be trusted.
_HEADER = struct.Struct("<4sBBHIIqqII")
_MAGIC = b"A2ZS"
_VERSION = 1
# Ledger record: boot_epoch, seq, CRC32 of the 16 bytes before it.
_LEDGER = struct.Struct("<qqI")
_EPOCH = struct.Struct("<qI")
_SEGMENT_SUFFIX = ".seg"
_Span = tuple[int, int]


class Spool:
    """A bounded, crash-safe queue of wire frames on disk, drained in ``(epoch, seq)`` order.

    Layout of ``directory``: ``<id>.<class>.seg`` segment files, one append-only stream of
    segments per priority class (so evicting the lowest class frees whole files);
    ``acks.ledger``; ``epoch``; ``lock``; ``quarantine/``.

    Each segment record is a 40-byte header (length, record count, class, ``(epoch, seq)``,
    frame CRC32, header CRC32) and the frame as sent. Appends are single ``os.write`` calls on
    an unbuffered descriptor, so a kill -9 loses nothing written: the page cache keeps it.
    fsync only matters for power loss. With ``fsync_interval_s`` 0 every append is synced;
    otherwise the owner calls :meth:`sync` every ``fsync_interval_s`` from a thread of its own
    (the agent service does; default 0.5 s, as Vector's disk buffer), so the producer never
    waits on the disk and a power cut loses at most that window of unacked batches. A torn
    tail it leaves is caught by the CRCs at the next open.

    Acks go to an append-only ledger of ``(epoch, seq)`` keys rather than into the segments:
    a segment is never rewritten in place, and is unlinked once all its batches are settled.
    The ledger is synced on the same schedule, because losing an ack is harmless: the batch
    is sent again and the server drops the duplicate by its natural key. Ledger keys with no
    segment left are ignored, so a crash between unlink and any ledger write is harmless too.
    The ledger is compacted (write, fsync, rename) at open and when mostly stale.

    At open, every segment is scanned. A torn or corrupt tail (short record, bad header: the
    framing after it cannot be trusted) is copied to ``quarantine/`` and counted; so is a record
    whose header is good but whose frame fails its CRC, alone, keeping its neighbours. The
    segment is then rewritten without the bad bytes (write, fsync, rename), so a repair cut
    short by a crash is simply done again.

    Thread-safe: the producer appends from a worker thread while the channel takes and acks.
    """

    def __init__(self, settings: SpoolSettings) -> None:
        """Open (creating if needed) and recover the spool at ``settings.directory``."""
        self.settings = settings
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        self._dir = settings.directory
        self._segments: dict[int, _Segment] = {}
        self._streams: dict[Priority, deque[int]] = {p: deque() for p in Priority}
        self._entries: dict[Key, Entry] = {}  # live: not acked, rejected, dropped or corrupt
        self._queue: deque[Key] = deque()  # unsent live keys, oldest first (lazily pruned)
        self._inflight: set[Key] = set()
        self._resent: set[Key] = set()
        self._next_segment = 1
        self._last_key: Key = (0, 0)
        self._last_epoch = 0
        self._ledger_records = 0
        self._dirty_fds: set[int] = set()
        self._dir_dirty = False
        self._closed = False
        self._lock_fd = -1
        self._ledger_fd = -1
        self._open()

    # --- producer side --------------------------------------------------------------------

    def new_epoch(self) -> int:
        """A boot epoch above every one this spool has seen, persisted before it is used.

        Server-side de-duplication trusts ``(epoch, seq)`` forever, so a clock that went back
        must not hand out an epoch whose batches the server already stored.
        """
        with self._lock:
            epoch = max(time.time_ns(), self._last_epoch + 1, self._last_key[0] + 1)
            _write_atomically(self._dir / "epoch", _pack_epoch(epoch), self._dir)
            self._last_epoch = epoch
            return epoch

    def resize(self, max_bytes: int) -> None:
        """Change the cap while running (a pushed configuration); a smaller cap is enforced at
        the next append, which evicts by priority as it always does."""
        if max_bytes <= 0:
            raise ValueError(f"spool cap must be positive, not {max_bytes}")
        with self._lock:
            self.settings = replace(self.settings, max_bytes=max_bytes)

    def append_batch(self, batch: Batch, priority: Priority | None = None) -> AppendResult:
        """Encode ``batch`` and append it; the class is derived from its records by default."""
        frame = encode_batch(batch)
        return self.append(
            frame,
            key=(batch.boot_epoch, batch.seq),
            records=len(batch.records),
            priority=classify(batch) if priority is None else priority,
        )

    def append(self, frame: bytes, *, key: Key, records: int, priority: Priority) -> AppendResult:
        """Store one wire frame, evicting lower (or as low, older) classes if the cap needs it.

        The batch is itself dropped (``stored`` false) when nothing it outranks can make room.
        """
        with self._lock:
            self._check_open()
            if key <= self._last_key:
                raise SpoolOrderError(f"batch {key} does not follow {self._last_key}")
            self._last_key = key
            cls = self.stats.classes[priority]
            cls.produced.add(records)
            need = _HEADER.size + len(frame)
            evicted: list[Key] = []
            if len(frame) > MAX_FRAME_BYTES or need > self.settings.max_bytes:
                cls.dropped.add(records)
                log.warning("spool: batch %s of %d bytes exceeds the limits", key, len(frame))
                return AppendResult(stored=False, evicted=evicted)
            while self.stats.bytes + need > self.settings.max_bytes:
                victim = self._victim(priority)
                if victim is None:
                    cls.dropped.add(records)
                    return AppendResult(stored=False, evicted=evicted)
                evicted += self._evict(victim)
            segment = self._active(priority, need)
            entry = Entry(
                key=key,
                priority=priority,
                records=records,
                segment=segment.id,
                offset=segment.size,
                length=len(frame),
                crc=zlib.crc32(frame),
            )
            try:
                _write_all(segment.fd, _pack_header(entry) + frame)
            except OSError as exc:
                # Cut off a partial write, so the next append does not land after garbage.
                os.ftruncate(segment.fd, segment.size)
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise SpoolError(f"cannot write to spool {self._dir}: {exc}") from exc
                cls.dropped.add(records)
                log.warning("spool: disk full; dropped batch %s", key)
                return AppendResult(stored=False, evicted=evicted)
            segment.size += need
            segment.keys.append(key)
            segment.live += 1
            self.stats.bytes += need
            self._entries[key] = entry
            self._queue.append(key)
            cls.pending.add(records)
            self._dirty_fds.add(segment.fd)
        if self.settings.fsync_interval_s == 0:
            self.sync()
        return AppendResult(stored=True, evicted=evicted)

    # --- channel side ---------------------------------------------------------------------

    def take(self) -> Spooled | None:
        """The oldest batch not yet in flight, read back and CRC-checked; None if none."""
        with self._lock:
            self._check_open()
            while self._queue:
                key = self._queue.popleft()
                entry = self._entries.get(key)
                if entry is None or key in self._inflight:
                    continue  # settled or evicted since it was queued
                segment = self._segments[entry.segment]
                frame = os.pread(segment.fd, entry.length, entry.offset + _HEADER.size)
                if len(frame) != entry.length or zlib.crc32(frame) != entry.crc:
                    self._read_back_failed(entry, segment)
                    continue
                self._inflight.add(key)
                segment.inflight += 1
                return Spooled(entry=entry, frame=frame, resend=key in self._resent)
            return None

    def rewind(self) -> None:
        """The connection ended: batches in flight go back to the front of the queue."""
        with self._lock:
            for key in sorted(self._inflight, reverse=True):
                self._queue.appendleft(key)
                self._resent.add(key)
                if (entry := self._entries.get(key)) is not None:
                    self._segments[entry.segment].inflight -= 1
            self._inflight.clear()

    def ack(self, key: Key) -> bool:
        """The server stored the batch: settle it. False if the spool no longer holds it."""
        return self._settle(key, "delivered")

    def reject(self, key: Key) -> bool:
        """The server refused the batch for good: settle it as rejected."""
        return self._settle(key, "rejected")

    # --- inspection and lifecycle ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """Batches held and not settled (queued or in flight)."""
        return len(self._entries)

    def entries(self) -> list[Entry]:
        """The live entries in delivery order (for diagnostics and tests)."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.key)

    def segment_path(self, entry: Entry) -> Path:
        """The file that holds ``entry``."""
        return self._segments[entry.segment].path

    def sync(self) -> None:
        """fsync what was written since the last sync (segments, ledger, directory).

        The fsyncs run outside the lock, so acks and takes on the event loop never wait on
        the disk; a descriptor closed meanwhile (its segment settled) needs no sync.
        """
        with self._lock:
            fds, self._dirty_fds = self._dirty_fds, set()
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno not in (errno.EBADF, errno.EINVAL):  # closed (and maybe reused)
                    raise
        if dir_dirty:
            _fsync_dir(self._dir)

    def close(self) -> None:
        """Sync and release the directory; the spool is reopened by constructing it again."""
        if self._closed:
            return
        if self.settings.fsync_interval_s >= 0:
            self.sync()
        with self._lock:
            self._closed = True
            for segment in self._segments.values():
                os.close(segment.fd)
            self._segments.clear()
            os.close(self._ledger_fd)
            os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- internals: settling, eviction, segments -------------------------------------------

    def _settle(self, key: Key, outcome: str) -> bool:
        with self._lock:
            self._check_open()
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            cls = self.stats.classes[entry.priority]
            getattr(cls, outcome).add(entry.records)
            _untally(cls.pending, entry.records)
            segment = self._segments[entry.segment]
            if key in self._inflight:
                self._inflight.discard(key)
                segment.inflight -= 1
            self._resent.discard(key)
            segment.live -= 1
            if segment.live == 0:
                self._delete(segment)
            else:
                try:
                    _write_all(self._ledger_fd, _pack_ledger(key))
                except OSError as exc:
                    # The ack is only lost from disk: after a restart the batch is sent again
                    # and the server drops the duplicate.
                    log.warning("spool: cannot record ack of %s: %s", key, exc)
                self._ledger_records += 1
                self._dirty_fds.add(self._ledger_fd)
                self._compact_if_stale()
            return True

    def _victim(self, incoming: Priority) -> _Segment | None:
        # Lowest class first, oldest segment first, never above the incoming batch's class and
        # never a segment with a batch in flight (its ack may still come: it would count twice).
        for priority in Priority:
            if priority > incoming:
                return None
            for seg_id in self._streams[priority]:
                segment = self._segments[seg_id]
                if segment.inflight == 0:
                    return segment
        return None

    def _evict(self, segment: _Segment) -> list[Key]:
        cls = self.stats.classes[segment.priority]
        evicted = []
        for key in segment.keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                cls.dropped.add(entry.records)
                _untally(cls.pending, entry.records)
                self._resent.discard(key)
                evicted.append(key)
        if evicted:
            log.warning(
                "spool full: dropped %d %s batches (segment %s)",
                len(evicted),
                segment.priority.name.lower(),
                segment.path.name,
            )
        segment.live = 0
        self._delete(segment)
        return evicted

    def _delete(self, segment: _Segment) -> None:
        os.close(segment.fd)
        self._dirty_fds.discard(segment.fd)
        segment.path.unlink(missing_ok=True)
        del self._segments[segment.id]
        self._streams[segment.priority].remove(segment.id)
        self.stats.bytes -= segment.size
        self._dir_dirty = True

    def _active(self, priority: Priority, need: int) -> _Segment:
        stream = self._streams[priority]
        if stream:
            segment = self._segments[stream[-1]]
            if segment.size == 0 or segment.size + need <= self.settings.roll_bytes():
                return segment
        seg_id = self._next_segment
        self._next_segment += 1
        path = self._dir / f"{seg_id:016d}.{priority.name.lower()}{_SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        segment = _Segment(id=seg_id, priority=priority, path=path, fd=fd, size=0)
        self._segments[seg_id] = segment
        stream.append(seg_id)
        self._dir_dirty = True
        return segment

    def _read_back_failed(self, entry: Entry, segment: _Segment) -> None:
        # The bytes changed on disk since they were written (or scanned): quarantine, count.
        end = entry.offset + _HEADER.size + entry.length
        data = os.pread(segment.fd, end - entry.offset, entry.offset)
        self._quarantine(segment.path, entry.offset, data)
        del self._entries[entry.key]
        cls = self.stats.classes[entry.priority]
        cls.corrupt.add(entry.records)
        _untally(cls.pending, entry.records)
        segment.live -= 1
        if segment.live == 0:
            self._delete(segment)

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError("spool is closed")

    # --- internals: ledger ------------------------------------------------------------------

    def _compact_if_stale(self) -> None:
        settled = sum(len(s.keys) - s.live for s in self._segments.values())
        if self._ledger_records > 2 * settled + 4096:
            self._rewrite_ledger()

    def _rewrite_ledger(self) -> None:
        keys = [k for s in self._segments.values() for k in s.keys if k not in self._entries]
        path = self._dir / "acks.ledger"
        _write_atomically(path, b"".join(_pack_ledger(k) for k in keys), self._dir)
        os.close(self._ledger_fd)
        self._dirty_fds.discard(self._ledger_fd)
        self._ledger_fd = -1
        self._ledger_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._ledger_records = len(keys)

    # --- internals: open and recovery -------------------------------------------------------

    def _open(self) -> None:
        try:
            self._recover()
        except SpoolError:
            raise
        except OSError as exc:
            for fd in [s.fd for s in self._segments.values()] + [self._ledger_fd, self._lock_fd]:
                if fd >= 0:
                    os.close(fd)
            raise SpoolError(f"cannot open spool {self._dir}: {exc}") from exc

    def _recover(self) -> None:
        (self._dir / "quarantine").mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SpoolBusy(f"spool {self._dir} is in use by another process") from exc
            raise SpoolError(f"cannot lock spool {self._dir}: {exc.strerror}") from exc
        for tmp in self._dir.glob("*.tmp"):
            tmp.unlink()  # an atomic rewrite that did not reach its rename
        self._last_epoch = _read_epoch(self._dir / "epoch")
        settled = self._read_ledger(self._dir / "acks.ledger")
        recovered: list[Entry] = []
        for path in sorted(self._dir.glob(f"*{_SEGMENT_SUFFIX}")):
            recovered += self._recover_segment(path, settled)
        recovered.sort(key=lambda e: e.key)
        for entry in recovered:
            self._entries[entry.key] = entry
            self._queue.append(entry.key)
            self.stats.classes[entry.priority].recovered.add(entry.records)
            self.stats.classes[entry.priority].pending.add(entry.records)
        if recovered:
            self._last_key = max(self._last_key, recovered[-1].key)
        ledger = self._dir / "acks.ledger"
        if not ledger.exists():
            ledger.touch(mode=0o600)
        self._ledger_fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._rewrite_ledger()
        _fsync_dir(self._dir)
        if recovered or self.stats.quarantined_regions:
            log.info(
                "spool %s: recovered %d batches (%d bytes), quarantined %d regions",
                self._dir,
                len(recovered),
                self.stats.bytes,
                self.stats.quarantined_regions,
            )

    def _read_ledger(self, path: Path) -> set[Key]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return set()
        keys: set[Key] = set()
        size = _LEDGER.size
        for off in range(0, len(data) - size + 1, size):
            epoch, seq, crc = _LEDGER.unpack_from(data, off)
            if zlib.crc32(data[off : off + size - 4]) == crc:
                keys.add((epoch, seq))
                self._last_key = max(self._last_key, (epoch, seq))
            # A bad ledger record only costs a re-send, which the server de-duplicates.
        return keys

    def _recover_segment(self, path: Path, settled: set[Key]) -> list[Entry]:
        try:
            seg_id = int(path.name.split(".")[0])
            priority = Priority[path.name.split(".")[1].upper()]
        except (ValueError, KeyError, IndexError):
            self._quarantine(path, 0, path.read_bytes())
            path.unlink()
            return []
        self._next_segment = max(self._next_segment, seg_id + 1)
        data = path.read_bytes()
        good, bad = _scan(data, priority)
        for start, end in bad:
            self._quarantine(path, start, data[start:end])
        if bad:
            log.warning("spool: %s had %d corrupt regions; quarantined", path.name, len(bad))
            body = b"".join(data[off : off + _HEADER.size + e.length] for off, e in good)
            _write_atomically(path, body, self._dir)
            good = list(_relocate(good))
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        segment = _Segment(id=seg_id, priority=priority, path=path, fd=fd, size=0)
        segment.size = os.fstat(fd).st_size
        live: list[Entry] = []
        for offset, scanned in good:
            entry = Entry(
                key=scanned.key,
                priority=priority,
                records=scanned.records,
                segment=seg_id,
                offset=offset,
                length=scanned.length,
                crc=scanned.crc,
            )
            segment.keys.append(entry.key)
            self._last_key = max(self._last_key, entry.key)
            if entry.key not in settled and entry.key not in self._entries:
                live.append(entry)
        segment.live = len(live)
        self._segments[seg_id] = segment
        self._streams[priority].append(seg_id)
        self.stats.bytes += segment.size
        if segment.live == 0:
            self._delete(segment)
        return live

    def _quarantine(self, source: Path, offset: int, data: bytes) -> None:
        # Named after its origin, so a repair interrupted by a crash rewrites the same file.
        name = f"{source.name}@{offset}"
        _write_atomically(self._dir / "quarantine" / name, data, self._dir / "quarantine")
        self.stats.quarantined_regions += 1
        self.stats.quarantined_bytes += len(data)
        log.warning("spool: quarantined %d bytes of %s at offset %d", len(data), source, offset)


def _scan(data: bytes, priority: Priority) -> tuple[list[tuple[int, Entry]], list[_Span]]:
    """Split a segment's bytes into good records and bad ``(start, end)`` ranges."""
    good: list[tuple[int, Entry]] = []
    bad: list[_Span] = []
    off, end, size = 0, len(data), _HEADER.size
    while off < end:
        if end - off < size:
            bad.append((off, end))  # torn header at the tail
            break
        magic, version, cls, _, length, records, epoch, seq, crc, header_crc = _HEADER.unpack_from(
            data, off
        )
        header_ok = (
            magic == _MAGIC
            and version == _VERSION
            and zlib.crc32(data[off : off + size - 4]) == header_crc
        )
        if not header_ok or off + size + length > end:
            bad.append((off, end))  # framing lost (or a torn record): the rest is the tail
            break
        frame = data[off + size : off + size + length]
        if cls != priority or zlib.crc32(frame) != crc:
            bad.append((off, off + size + length))  # this record only
        else:
            entry = Entry(
                key=(epoch, seq),
                priority=priority,
                records=records,
                segment=0,
                offset=off,
                length=length,
                crc=crc,
            )
            good.append((off, entry))
        off += size + length
    return good, bad


def _relocate(good: Iterable[tuple[int, Entry]]) -> Iterable[tuple[int, Entry]]:
    offset = 0
    for _, entry in good:
        yield offset, entry
        offset += _HEADER.size + entry.length


def _pack_header(entry: Entry) -> bytes:
    epoch, seq = entry.key
    head = _HEADER.pack(
        _MAGIC, _VERSION, entry.priority, 0, entry.length, entry.records, epoch, seq, entry.crc, 0
    )
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))


def _pack_ledger(key: Key) -> bytes:
    head = struct.pack("<qq", *key)
    return head + struct.pack("<I", zlib.crc32(head))


def _pack_epoch(epoch: int) -> bytes:
    head = struct.pack("<q", epoch)
    return head + struct.pack("<I", zlib.crc32(head))


def _read_epoch(path: Path) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if len(data) != _EPOCH.size:
        return 0
    epoch, crc = _EPOCH.unpack(data)
    return int(epoch) if zlib.crc32(data[:8]) == crc else 0


def _untally(tally: Tally, records: int) -> None:
    tally.batches -= 1
    tally.records -= records


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_atomically(path: Path, data: bytes, directory: Path) -> None:
    """Replace ``path`` with ``data``: write a temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
