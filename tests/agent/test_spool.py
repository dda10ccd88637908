"""The disk spool: order, acks, restarts, torn and corrupt segments, the cap and its drop order."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)
from websockets.asyncio.server import ServerConnection, serve

from a2z.agent.config import AgentConfig, ConfigError
from a2z.agent.service import describe, ship_records, spool_settings
from a2z.agent.ship.channel import ChannelClient, ShipStats
from a2z.agent.ship.outbox import SpoolOutbox
from a2z.agent.ship.spool import (
    Key,
    Priority,
    Spool,
    SpoolBusy,
    SpoolError,
    SpoolOrderError,
    SpoolSettings,
    SpoolStats,
    classify,
)
from a2z.records import Alert, Batch, Conn, Record, Severity, decode_batch, encode_batch

HEADER = 40  # bytes before each frame in a segment


def conn(i: int) -> Conn:
    return Conn(
        ts=1_700_000_000.0 + i, uid=f"C{i}", orig_h="10.0.0.1", orig_p=1024 + i % 60000,
        resp_h="10.0.0.2", resp_p=443, proto="tcp", conn_state="SF", orig_bytes=i,
    )  # fmt: skip


def alert(i: int) -> Alert:
    return Alert(
        ts=1_700_000_000.0 + i, uid=f"C{i}", orig_h="10.0.0.1", orig_p=1024, resp_h="10.0.0.2",
        resp_p=22, rule_id="ssh-bruteforce", title="SSH brute force", severity=Severity.HIGH,
    )  # fmt: skip


def batch(seq: int, *, n: int = 3, kind: str = "conn", epoch: int = 1) -> Batch:
    records: list[Record] = [conn(seq * 1000 + i) for i in range(n)]
    if kind == "alert":
        records[0] = alert(seq)
    elif kind == "metrics":
        records = []  # no metrics record type yet: an empty batch is telemetry-only
    return Batch(agent_id="agent-1", boot_epoch=epoch, seq=seq, sent_at=0.0, records=records)


def open_spool(path: Path, max_bytes: int = 1 << 30, segment_bytes: int | None = None) -> Spool:
    return Spool(
        SpoolSettings(
            directory=path, max_bytes=max_bytes, segment_bytes=segment_bytes, fsync_interval_s=0
        )
    )


def drain(spool: Spool) -> list[Key]:
    """Take everything unsent, in order, and return the keys (leaves them in flight)."""
    keys = []
    while (taken := spool.take()) is not None:
        assert decode_batch(taken.frame).seq == taken.entry.key[1]
        keys.append(taken.entry.key)
    return keys


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def assert_balanced(stats: SpoolStats) -> None:
    """recovered + produced == delivered + dropped + rejected + corrupt + pending, per class."""
    for cls in stats.classes.values():
        for unit in ("batches", "records"):
            came = getattr(cls.recovered, unit) + getattr(cls.produced, unit)
            went = sum(
                getattr(getattr(cls, name), unit)
                for name in ("delivered", "dropped", "rejected", "corrupt", "pending")
            )
            assert came == went, (unit, cls)


# --- basics ------------------------------------------------------------------------------------


def test_classify_alert_beats_flow_beats_metrics() -> None:
    assert classify(batch(1, kind="alert")) is Priority.ALERT
    assert classify(batch(1)) is Priority.FLOW
    assert classify(batch(1, kind="metrics")) is Priority.METRICS


def test_append_take_ack_returns_frames_in_order_and_deletes_settled_segments(
    tmp_path: Path,
) -> None:
    with open_spool(tmp_path) as spool:
        sent = [batch(s, kind="alert" if s % 3 == 0 else "conn") for s in range(1, 8)]
        for b in sent:
            assert spool.append_batch(b).stored
        assert len(segments(tmp_path)) == 2  # one stream per class
        taken = []
        while (t := spool.take()) is not None:
            taken.append(t)
        assert [t.frame for t in taken] == [encode_batch(b) for b in sent]
        assert not any(t.resend for t in taken)
        assert spool.take() is None
        for t in taken:
            assert spool.ack(t.entry.key)
        assert not spool.ack(taken[0].entry.key)  # already settled
        assert spool.pending == 0
        assert segments(tmp_path) == []
        assert spool.stats.bytes == 0
        assert spool.stats.total("delivered").records == 21
        assert_balanced(spool.stats)


def test_rewind_sends_in_flight_batches_again_oldest_first(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for s in range(1, 6):
            spool.append_batch(batch(s))
        first = [spool.take(), spool.take(), spool.take()]
        assert first[1] is not None
        spool.ack(first[1].entry.key)
        spool.rewind()
        again = [t for t in iter(spool.take, None)]
        assert [t.entry.key[1] for t in again] == [1, 3, 4, 5]
        assert [t.resend for t in again] == [True, True, False, False]


def test_append_must_follow_every_key_seen(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append_batch(batch(5))
        with pytest.raises(SpoolOrderError):
            spool.append_batch(batch(5))
        with pytest.raises(SpoolOrderError):
            spool.append_batch(batch(4))
        spool.append_batch(batch(1, epoch=2))  # a new epoch restarts seq


def test_a_second_process_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    with open_spool(tmp_path), pytest.raises(SpoolBusy):
        open_spool(tmp_path)
    open_spool(tmp_path).close()  # released on close


# --- restart ---------------------------------------------------------------------------------


def test_restart_recovers_unacked_batches_with_their_original_epoch_and_seq(
    tmp_path: Path,
) -> None:
    with open_spool(tmp_path) as spool:
        for s in range(1, 6):
            spool.append_batch(batch(s, epoch=7))
        for key in drain(spool):
            if key[1] in (1, 3):
                spool.ack(key)
    with open_spool(tmp_path) as spool:
        assert spool.stats.total("recovered").batches == 3
        frames = [t.frame for t in iter(spool.take, None)]
        assert [(b.boot_epoch, b.seq) for b in map(decode_batch, frames)] == [
            (7, 2), (7, 4), (7, 5),
        ]  # fmt: skip
        assert frames == [encode_batch(batch(s, epoch=7)) for s in (2, 4, 5)]
        assert_balanced(spool.stats)


def test_new_epoch_is_above_every_epoch_seen_even_if_the_clock_went_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_spool(tmp_path) as spool:
        first = spool.new_epoch()
        spool.append_batch(batch(1, epoch=first))
        spool.ack((first, 1))  # settled and gone: only the epoch file remembers it
    assert segments(tmp_path) == []
    monkeypatch.setattr("a2z.agent.ship.spool.time.time_ns", lambda: 1000)
    with open_spool(tmp_path) as spool:
        second = spool.new_epoch()
        assert second > first
        assert spool.new_epoch() > second


def test_a_lost_ack_means_a_resend_never_a_loss(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for s in range(1, 4):
            spool.append_batch(batch(s))
        spool.ack((1, 1))  # the segment lives on, so the ack goes to the ledger
    ledger = tmp_path / "acks.ledger"
    assert ledger.stat().st_size == 20
    ledger.write_bytes(ledger.read_bytes()[:11])  # a torn ledger write
    with open_spool(tmp_path) as spool:
        assert [k[1] for k in drain(spool)] == [1, 2, 3]


# --- torn and corrupt segments -----------------------------------------------------------------


def fill_one_segment(path: Path, n: int = 5) -> list[int]:
    """n flow batches in one segment; returns each record's start offset."""
    with open_spool(path) as spool:
        for s in range(1, n + 1):
            spool.append_batch(batch(s))
        return [e.offset for e in spool.entries()]


def test_torn_tail_is_quarantined_counted_and_the_rest_kept(tmp_path: Path) -> None:
    offsets = fill_one_segment(tmp_path)
    (seg,) = segments(tmp_path)
    size = seg.stat().st_size
    with seg.open("r+b") as fh:
        fh.truncate(offsets[-1] + HEADER + 7)  # the last batch written half-way
    with open_spool(tmp_path) as spool:
        assert [k[1] for k in drain(spool)] == [1, 2, 3, 4]
        assert spool.stats.quarantined_regions == 1
        assert spool.stats.quarantined_bytes == HEADER + 7
    (quarantined,) = (tmp_path / "quarantine").iterdir()
    assert quarantined.name == f"{seg.name}@{offsets[-1]}"
    assert seg.stat().st_size == offsets[-1] < size
    with open_spool(tmp_path) as spool:  # repaired: nothing more to quarantine
        assert spool.stats.quarantined_regions == 0
        assert spool.pending == 4


def test_truncated_inside_a_header_is_a_torn_tail_too(tmp_path: Path) -> None:
    offsets = fill_one_segment(tmp_path)
    (seg,) = segments(tmp_path)
    with seg.open("r+b") as fh:
        fh.truncate(offsets[-1] + 5)
    with open_spool(tmp_path) as spool:
        assert spool.pending == 4
        assert spool.stats.quarantined_regions == 1


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_frame_costs_that_batch_only(tmp_path: Path) -> None:
    offsets = fill_one_segment(tmp_path)
    (seg,) = segments(tmp_path)
    flip(seg, offsets[2] + HEADER + 10)
    with open_spool(tmp_path) as spool:
        assert [k[1] for k in drain(spool)] == [1, 2, 4, 5]
        assert spool.stats.quarantined_regions == 1
    with open_spool(tmp_path) as spool:  # the segment was rewritten without it
        assert spool.stats.quarantined_regions == 0
        assert [k[1] for k in drain(spool)] == [1, 2, 4, 5]


def test_a_flipped_byte_in_a_header_quarantines_the_rest_of_the_segment(tmp_path: Path) -> None:
    offsets = fill_one_segment(tmp_path)
    (seg,) = segments(tmp_path)
    flip(seg, offsets[3] + 9)  # the frame length: framing after it cannot be trusted
    with open_spool(tmp_path) as spool:
        assert [k[1] for k in drain(spool)] == [1, 2, 3]
        assert spool.stats.quarantined_regions == 1


def test_corruption_after_open_is_caught_when_read_back(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for s in range(1, 4):
            spool.append_batch(batch(s))
        (entry,) = [e for e in spool.entries() if e.key == (1, 2)]
        flip(spool.segment_path(entry), entry.offset + HEADER + 3)
        assert [k[1] for k in drain(spool)] == [1, 3]
        assert spool.stats.classes[Priority.FLOW].corrupt.batches == 1
        assert spool.stats.quarantined_regions == 1
        assert_balanced(spool.stats)


def test_a_segment_with_a_foreign_name_is_quarantined(tmp_path: Path) -> None:
    fill_one_segment(tmp_path, n=2)
    (tmp_path / "junk.seg").write_bytes(b"not a segment")
    with open_spool(tmp_path) as spool:
        assert spool.pending == 2
        assert spool.stats.quarantined_regions == 1
    assert not (tmp_path / "junk.seg").exists()


def test_a_full_disk_drops_the_batch_and_leaves_no_torn_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def full_after_ten_bytes(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    with open_spool(tmp_path) as spool:
        spool.append_batch(batch(1))
        monkeypatch.setattr("a2z.agent.ship.spool.os.write", full_after_ten_bytes)
        assert not spool.append_batch(batch(2)).stored
        monkeypatch.undo()
        assert spool.stats.classes[Priority.FLOW].dropped.batches == 1
        assert spool.append_batch(batch(3)).stored
        assert_balanced(spool.stats)
    with open_spool(tmp_path) as spool:
        assert spool.stats.quarantined_regions == 0
        assert [k[1] for k in drain(spool)] == [1, 3]


def test_an_unusable_directory_is_a_spool_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot open spool"):
        open_spool(tmp_path / "file" / "spool")


# --- the cap ---------------------------------------------------------------------------------


def frame_bytes(b: Batch) -> int:
    return HEADER + len(encode_batch(b))


def test_full_spool_drops_metrics_then_flows_then_alerts(tmp_path: Path) -> None:
    kinds = ["metrics"] * 4 + ["conn"] * 4 + ["alert"] * 4
    size = max(frame_bytes(batch(s, kind=k)) for s, k in enumerate(kinds + ["alert"] * 12, 1))
    # Room for 12 batches, one batch per segment, so each eviction frees exactly one batch.
    with open_spool(tmp_path, max_bytes=12 * size, segment_bytes=1) as spool:
        for s, kind in enumerate(kinds, 1):
            assert spool.append_batch(batch(s, kind=kind)).stored
        evicted: list[int] = []
        for s in range(13, 25):  # twelve more alerts push everything else out
            result = spool.append_batch(batch(s, kind="alert"))
            assert result.stored
            evicted += [k[1] for k in result.evicted]
        assert evicted[:4] == [1, 2, 3, 4]  # metrics first, oldest first
        assert evicted[4:8] == [5, 6, 7, 8]  # then flows
        assert evicted[8:] == [9, 10, 11, 12][: len(evicted) - 8]  # then the oldest alerts
        dropped = {p: c.dropped.batches for p, c in spool.stats.classes.items()}
        assert dropped[Priority.METRICS] == 4
        assert dropped[Priority.FLOW] == 4
        assert dropped[Priority.ALERT] == len(evicted) - 8
        assert spool.stats.bytes <= 12 * size
        assert_balanced(spool.stats)


def test_a_full_spool_drops_an_incoming_metrics_batch_rather_than_older_flows(
    tmp_path: Path,
) -> None:
    size = max(frame_bytes(batch(s, n=20)) for s in range(1, 4))
    with open_spool(tmp_path, max_bytes=3 * size, segment_bytes=1) as spool:
        for s in range(1, 4):
            spool.append_batch(batch(s, n=20))  # flows fill it; a metrics batch is small
        result = spool.append_batch(batch(4, kind="metrics"))
        assert not result.stored
        assert result.evicted == []
        assert spool.stats.classes[Priority.METRICS].dropped.batches == 1
        assert [k[1] for k in drain(spool)] == [1, 2, 3]


def test_batches_in_flight_are_not_evicted(tmp_path: Path) -> None:
    size = max(frame_bytes(batch(s)) for s in range(1, 5))
    with open_spool(tmp_path, max_bytes=3 * size, segment_bytes=1) as spool:
        for s in range(1, 4):
            spool.append_batch(batch(s))
        assert spool.take() is not None  # seq 1 is on the wire: its ack may still come
        result = spool.append_batch(batch(4))
        assert [k[1] for k in result.evicted] == [2]
        assert spool.ack((1, 1))
        assert spool.stats.classes[Priority.FLOW].delivered.batches == 1
        assert_balanced(spool.stats)


def test_produced_minus_delivered_equals_dropped(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=40_000, segment_bytes=4_000) as spool:
        for s in range(1, 301):
            kind = "alert" if s % 10 == 0 else "metrics" if s % 3 == 0 else "conn"
            spool.append_batch(batch(s, kind=kind, n=8))
            if s % 4 == 0:  # a slow link: one batch in four gets through
                taken = spool.take()
                assert taken is not None
                spool.ack(taken.entry.key)
        for key in drain(spool):
            spool.ack(key)
        stats = spool.stats
        produced, delivered = stats.total("produced"), stats.total("delivered")
        dropped = stats.total("dropped")
        assert dropped.records > 0
        assert produced.records - delivered.records == dropped.records
        assert produced.batches - delivered.batches == dropped.batches
        by_class = {p: c.dropped.batches / c.produced.batches for p, c in stats.classes.items()}
        assert by_class[Priority.METRICS] >= by_class[Priority.FLOW] >= by_class[Priority.ALERT]
        assert_balanced(stats)


def test_a_batch_larger_than_the_cap_is_dropped_and_counted(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=200) as spool:
        assert not spool.append_batch(batch(1, n=50)).stored
        assert spool.stats.classes[Priority.FLOW].dropped.records == 50
        assert_balanced(spool.stats)


# --- the channel draining the spool ------------------------------------------------------------


@pytest.fixture
async def flaky_server() -> AsyncIterator[tuple[str, list[list[Key]]]]:
    """Acks every batch, but drops the connection at every 7th frame, unanswered."""
    connections: list[list[Key]] = []

    async def handler(ws: ServerConnection) -> None:
        received: list[Key] = []
        connections.append(received)
        async for frame in ws:
            assert isinstance(frame, bytes)
            b = decode_batch(frame)
            received.append((b.boot_epoch, b.seq))
            if len(received) % 7 == 0:
                await ws.close()
                return
            await ws.send(msgspec.json.encode({"ack": b.seq, "epoch": b.boot_epoch}).decode())

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}", connections


async def test_channel_drains_the_spool_in_order_across_reconnects(
    tmp_path: Path, flaky_server: tuple[str, list[list[Key]]]
) -> None:
    url, connections = flaky_server
    spool = open_spool(tmp_path)
    for s in range(1, 41):
        spool.append_batch(batch(s, epoch=3))
    outbox = SpoolOutbox(spool)
    outbox.close()
    client = ChannelClient(url, max_backoff_s=0.05, window=4)
    stats = await asyncio.wait_for(client.deliver(outbox), timeout=30)
    spool.close()
    assert stats.batches_acked == 40
    assert stats.reconnects >= 5
    assert stats.resends >= 5
    assert sorted({k for conn in connections for k in conn}) == [(3, s) for s in range(1, 41)]
    for conn in connections:  # each connection starts with the oldest unacked, then in order
        assert conn == sorted(conn)
    for before, after in itertools.pairwise(connections):
        assert after[0] == before[-1]  # the unanswered frame is the first one sent again
    assert segments(tmp_path) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_agent_spools_while_the_server_is_down_drops_by_priority_then_delivers(
    tmp_path: Path,
) -> None:
    """The service path: producer -> bounded spool -> channel, with the server down at first."""
    records: list[Record] = []
    for b in range(200):  # 200 batches of 50; every 10th batch carries an alert
        records += [alert(b) if b % 10 == 0 and i == 0 else conn(b * 100 + i) for i in range(50)]
    port = free_port()
    config = AgentConfig(
        server=f"ws://127.0.0.1:{port}/", agent_id="agent-1", batch_size=50, reconnect_max_s=0.1
    )
    settings = SpoolSettings(
        directory=tmp_path, max_bytes=40_000, segment_bytes=2_000, fsync_interval_s=0.05
    )
    seen: list[ShipStats] = []
    shipping = asyncio.create_task(
        ship_records(
            config, records, spool=settings, progress=seen.append, progress_interval_s=0.02
        )
    )
    for _ in range(500):  # the producer fills the spool while nothing answers
        await asyncio.sleep(0.02)
        if seen and seen[-1].spool and seen[-1].spool.total("produced").batches == 200:
            break
    spool_stats = seen[-1].spool
    assert spool_stats is not None
    assert spool_stats.total("produced").batches == 200
    assert spool_stats.total("delivered").batches == 0
    assert spool_stats.bytes <= 40_000

    received: list[Batch] = []

    async def handler(ws: ServerConnection) -> None:
        async for frame in ws:
            assert isinstance(frame, bytes)
            b = decode_batch(frame)
            received.append(b)
            await ws.send(msgspec.json.encode({"ack": b.seq, "epoch": b.boot_epoch}).decode())

    async with serve(handler, "127.0.0.1", port):
        stats = await asyncio.wait_for(shipping, timeout=30)
    assert stats.spool is spool_stats
    produced, delivered = spool_stats.total("produced"), spool_stats.total("delivered")
    dropped = spool_stats.total("dropped")
    assert dropped.batches > 0
    assert produced.records - delivered.records == dropped.records
    assert stats.records_acked == delivered.records == sum(len(b.records) for b in received)
    keys = [(b.boot_epoch, b.seq) for b in received]
    assert keys == sorted(set(keys))  # in order, each once
    assert spool_stats.classes[Priority.ALERT].dropped.batches == 0  # alerts are kept longest
    assert sum(1 for b in received if classify(b) is Priority.ALERT) == 20
    assert segments(tmp_path) == []


def test_spool_settings_take_the_command_line_over_the_config(tmp_path: Path) -> None:
    config = AgentConfig(server="wss://x/channel", agent_id="a", spool_dir=str(tmp_path / "cfg"))
    from_config = spool_settings(config)
    assert from_config is not None
    assert from_config.directory == tmp_path / "cfg"
    assert from_config.max_bytes == 1 << 30
    flags = spool_settings(config, spool_dir=tmp_path / "cli", spool_max_bytes=5 << 20)
    assert flags == SpoolSettings(directory=tmp_path / "cli", max_bytes=5 << 20)
    assert spool_settings(AgentConfig(server="wss://x/channel", agent_id="a")) is None
    with pytest.raises(ConfigError, match="below the minimum"):
        spool_settings(config, spool_max_bytes=1000)


def test_describe_reports_drops_per_class_and_quarantine() -> None:
    stats = ShipStats(records_acked=90, batches_acked=9, spool=SpoolStats())
    assert stats.spool is not None
    stats.spool.classes[Priority.METRICS].dropped.add(7)
    stats.spool.quarantined_regions = 1
    line = describe(stats)
    assert line.startswith("delivered 90 records in 9 batches")
    assert "dropped records: metrics 7, flow 0, alert 0" in line
    assert "1 regions quarantined" in line


# --- property: nothing un-dropped and un-acked is ever lost ------------------------------------


class SpoolMachine(RuleBasedStateMachine):
    """Random appends, takes, acks, rewinds, restarts and corruptions against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-prop-"))
        self.settings = SpoolSettings(
            directory=self.dir, max_bytes=6_000, segment_bytes=1_500, fsync_interval_s=-1
        )
        self.spool = Spool(self.settings)
        self.seq = 0
        self.frames: dict[Key, bytes] = {}  # the model: live batches and their exact frames
        self.maybe_lost: set[Key] = set()  # hit by corruption: may be gone, never wrong
        self.restarts = 0

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(kind=st.sampled_from(["conn", "alert", "metrics"]), n=st.integers(1, 12))
    def append(self, kind: str, n: int) -> None:
        self.seq += 1
        b = batch(self.seq, kind=kind, n=n, epoch=self.restarts + 1)
        result = self.spool.append_batch(b)
        for key in result.evicted:
            self.frames.pop(key)
            self.maybe_lost.discard(key)
        if result.stored:
            self.frames[(b.boot_epoch, b.seq)] = encode_batch(b)

    @rule()
    def take(self) -> None:
        taken = self.spool.take()
        if taken is not None:
            assert taken.frame == self.frames[taken.entry.key]

    @precondition(lambda self: bool(self.frames))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.frames)))
        assert self.spool.ack(key) or key in self.maybe_lost
        self.frames.pop(key)
        self.maybe_lost.discard(key)

    @rule()
    def rewind(self) -> None:
        self.spool.rewind()

    @rule()
    def restart(self) -> None:
        self.spool.close()
        self._reopen()

    def _reopen(self) -> None:
        self.spool = Spool(self.settings)
        self.restarts += 1
        self.seq = 0
        survivors = {e.key for e in self.spool.entries()}
        assert survivors <= set(self.frames)  # nothing acked or dropped comes back
        assert set(self.frames) - self.maybe_lost <= survivors  # nothing else is lost
        for key in set(self.frames) - survivors:
            del self.frames[key]
        self.maybe_lost.clear()
        for taken in iter(self.spool.take, None):  # and every survivor is byte-exact
            assert taken.frame == self.frames[taken.entry.key]
        self.spool.rewind()

    @precondition(lambda self: bool(self.frames))
    @rule(data=st.data(), how=st.sampled_from(["truncate", "flip"]))
    def crash_with_damage(self, data: st.DataObject, how: str) -> None:
        """Stop, damage one segment as a crash or bad disk would, and start again."""
        entries = self.spool.entries()
        paths = {e.key: self.spool.segment_path(e) for e in entries}
        target = data.draw(st.sampled_from(entries))
        path = paths[target.key]
        self.spool.close()
        size = path.stat().st_size
        pos = data.draw(st.integers(target.offset, size - 1))
        if how == "truncate":
            with path.open("r+b") as fh:
                fh.truncate(pos)
        else:
            flip(path, pos)
        # Everything in that segment from the damaged record on may be quarantined.
        for e in entries:
            if paths[e.key] == path and e.offset + HEADER + e.length > pos:
                self.maybe_lost.add(e.key)
        self._reopen()

    @invariant()
    def balanced(self) -> None:
        assert_balanced(self.spool.stats)
        assert self.spool.stats.bytes <= self.settings.max_bytes


SpoolMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_spool_never_loses_an_undropped_unacked_batch = SpoolMachine.TestCase
