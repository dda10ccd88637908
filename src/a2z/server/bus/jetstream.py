"""NATS JetStream bus for the scale-out roles: durable publish, durable pull consumers.

``publish`` returns on the stream's PubAck, de-duplicated by ``Nats-Msg-Id``. Each subscribed
group (role) is a durable pull consumer: a message is acked after its handler committed,
redelivered with backoff after a transient failure, and moved to the dead-letter stream when it
is poison or has used up its deliveries. Configuring the server to fsync before it acks, and
why: docs/adr/0004-jetstream-bus.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from a2z.server.bus.base import BusError, Handler, Message, dead_letter_subject
from a2z.server.config import JetStreamSettings
from a2z.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"
# 2.10.22 could lose a whole stream on a process crash (fixed in 2.10.23, Jepsen 2025-12-08);
# sync_interval (for fsync before ack) exists from 2.10.
MIN_SAFE_SERVER = (2, 10, 23)
EVENTS_PREFIX = "a2z.events."
DLQ_PREFIX = "a2z.dlq.events."
MAX_ACK_PENDING = 1024  # unacked messages per group across all its processes
FETCH_WAIT = 1.0  # seconds a pull waits for messages; bounds how long a drain waits for it
RESTART_DELAY = 1.0  # seconds before a failed consumer loop is restarted (doubling)
MAX_RESTART_DELAY = 30.0
DRAIN_TIMEOUT = 30.0  # seconds close() lets in-flight handlers finish
_HEADER_MAX = 512

# Publish failures after which the same message is sent again: nothing was stored, or it was
# and the dedup window turns the second copy into a duplicate PubAck.
_RETRYABLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)


@dataclass(frozen=True, slots=True)
class _Subscription:
    prefix: str
    handler: Handler
    group: str
    in_flight: int  # handlers running at once in this process


class JetStreamBus:
    """The Bus on a JetStream stream; one instance per process, started inside its loop."""

    def __init__(
        self, servers: str | Sequence[str], settings: JetStreamSettings, metrics: ServerMetrics
    ) -> None:
        if settings.namespace and not settings.namespace.endswith("."):
            raise ValueError("the JetStream namespace must end with '.'")
        if settings.max_deliver <= len(settings.backoff):
            raise ValueError("max_deliver must exceed the number of backoff steps")
        urls = servers.split(",") if isinstance(servers, str) else list(servers)
        self._servers = [url.strip() for url in urls if url.strip()]
        self._settings = settings
        self._metrics = metrics
        self._subscriptions: list[_Subscription] = []
        self._consumers: list[_PullConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    @property
    def stream(self) -> str:
        """Name of the events stream."""
        return self._settings.stream

    @property
    def dead_letter_stream(self) -> str:
        """Name of the stream that keeps dead-lettered messages."""
        return f"{self._settings.stream}_DLQ"

    def nats_subject(self, subject: str) -> str:
        """The NATS subject for a bus subject (the namespace prepended)."""
        return self._settings.namespace + subject

    def bus_subject(self, nats_subject: str) -> str:
        """Inverse of ``nats_subject``."""
        return nats_subject.removeprefix(self._settings.namespace)

    def subscribe(
        self, subject_prefix: str, handler: Handler, *, group: str, in_flight: int | None = None
    ) -> None:
        """Register a durable consumer ``group`` over ``subject_prefix``; started by ``start``.
        ``in_flight``: its handlers running at once (default ``settings.concurrency``)."""
        if not subject_prefix.startswith(EVENTS_PREFIX):
            raise ValueError(f"{subject_prefix!r} is not under the events stream")
        if not subject_prefix.endswith("."):
            raise ValueError("a subject prefix ends with '.'")
        if any(sub.group == group for sub in self._subscriptions):
            raise ValueError(f"group {group!r} already has a subscriber")
        limit = self._settings.concurrency if in_flight is None else in_flight
        self._subscriptions.append(_Subscription(subject_prefix, handler, group, limit))

    async def start(self) -> None:
        """Connect, check the server, create or update the streams, start the consumers."""
        if self._nc is not None:
            raise RuntimeError("bus already started")
        try:
            self._nc = await nats.connect(
                servers=self._servers,
                name="a2z",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=5,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except (OSError, nats.errors.Error) as exc:
            raise BusError(f"cannot reach NATS at {','.join(self._servers)}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=10)
        self._check_version()
        await self._check_fsync()
        await self._ensure_streams()
        for sub in self._subscriptions:
            consumer = _PullConsumer(self, self._js, sub, self._settings, self._metrics)
            try:
                await consumer.bind()  # the durable consumer exists once start returns
                await consumer.watch_exhausted(self._nc)
            except nats.errors.Error as exc:
                raise BusError(f"cannot create consumer {sub.group}: {exc}") from exc
            self._consumers.append(consumer)
            self._tasks.append(asyncio.create_task(consumer.run(), name=f"a2z-bus-{sub.group}"))

    async def publish(self, message: Message) -> None:
        """Return once the stream holds ``message`` (PubAck); raise BusError if it does not."""
        ack = await self.publish_raw(
            self.nats_subject(message.subject),
            message.payload,
            {MSG_ID: message.msg_id},
            stream=self.stream,
        )
        self._metrics.bus_published.inc()
        if ack.duplicate:
            self._metrics.bus_publish_duplicates.inc()

    async def publish_raw(
        self, subject: str, payload: bytes, headers: dict[str, str], *, stream: str
    ) -> PubAck:
        """Publish to ``stream`` and await its PubAck, re-sending after transient failures."""
        js = self._require_js()
        deadline = time.monotonic() + self._settings.publish_timeout
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                # A copy each time: nats-py adds the expected-stream header to the dict.
                return await js.publish(
                    subject,
                    payload,
                    timeout=max(0.1, min(remaining, 5.0)),
                    stream=stream,
                    headers=dict(headers),
                )
            except _RETRYABLE as exc:
                self._metrics.bus_publish_errors.inc()
                if time.monotonic() + pause >= deadline:
                    raise BusError(f"{subject}: no PubAck within the deadline: {exc}") from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            except nats.errors.Error as exc:
                self._metrics.bus_publish_errors.inc()
                raise BusError(f"{subject}: publish refused: {exc}") from exc

    async def close(self) -> None:
        """Stop pulling, let in-flight handlers finish and ack, flush, disconnect."""
        for consumer in self._consumers:
            consumer.stop()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=FETCH_WAIT + DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(c.drain(DRAIN_TIMEOUT) for c in self._consumers))
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self._nc.flush(timeout=5)  # the last acks reach the server
            await self._nc.close()

    def _require_js(self) -> JetStreamContext:
        if self._js is None or self._nc is None or self._nc.is_closed:
            raise BusError("the JetStream bus is not started (or already closed)")
        return self._js

    def _check_version(self) -> None:
        assert self._nc is not None
        version = self._nc.connected_server_version
        found = (version.major, version.minor, version.patch)
        if found < MIN_SAFE_SERVER:
            log.warning(
                "nats-server %s is older than %s: it can lose acknowledged messages "
                "(see docs/adr/0004-jetstream-bus.md)",
                ".".join(map(str, found)),
                ".".join(map(str, MIN_SAFE_SERVER)),
            )

    async def _check_fsync(self) -> None:
        """Refuse to start against a monitored node that does not fsync before acking."""
        if not self._settings.monitor_urls:
            log.info("fsync-before-ack of the NATS servers not checked (no monitor_urls)")
            return
        async with httpx.AsyncClient(timeout=5) as http:
            for url in self._settings.monitor_urls:
                varz = url if url.rstrip("/").endswith("/varz") else url.rstrip("/") + "/varz"
                try:
                    resp = await http.get(varz)
                    resp.raise_for_status()
                    body = resp.json()
                except (httpx.HTTPError, ValueError) as exc:
                    raise BusError(f"cannot read {varz}: {exc}") from exc
                config = body.get("jetstream", {}).get("config", {})
                if config.get("sync_always") is not True:
                    raise BusError(
                        f"{varz}: nats-server {body.get('version')} acks before fsync; "
                        "set `jetstream { sync_interval: always }` (nats-server >= 2.10)"
                    )

    async def _ensure_streams(self) -> None:
        s = self._settings

        def config(name: str, prefix: str, max_age: float, description: str) -> StreamConfig:
            return StreamConfig(
                name=name,
                description=description,
                subjects=[self.nats_subject(prefix + ">")],
                storage=StorageType.FILE,
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                max_age=max_age,
                num_replicas=s.replicas,
                duplicate_window=s.duplicate_window,
            )

        await self._ensure_stream(
            config(self.stream, EVENTS_PREFIX, s.max_age, "A2Z SOC agent record batches")
        )
        await self._ensure_stream(
            config(
                self.dead_letter_stream,
                DLQ_PREFIX,
                max(s.max_age, 30 * 86400.0),
                "A2Z SOC batches no consumer could handle",
            )
        )

    async def _ensure_stream(self, config: StreamConfig) -> None:
        js = self._require_js()
        try:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                # Exists with other settings (replicas, window, age): bring it to ours.
                await js.update_stream(config)
        except nats.errors.Error as exc:
            raise BusError(f"cannot create or update stream {config.name}: {exc}") from exc

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    async def _on_disconnected(self) -> None:
        log.warning("NATS: disconnected")

    async def _on_reconnected(self) -> None:
        assert self._nc is not None
        log.info("NATS: reconnected to %s", self._nc.connected_url)


class _PullConsumer:
    """One group's pull loop: bounded in-flight handlers, ack after commit, supervised."""

    def __init__(
        self,
        bus: JetStreamBus,
        js: JetStreamContext,
        subscription: _Subscription,
        settings: JetStreamSettings,
        metrics: ServerMetrics,
    ) -> None:
        self._bus = bus
        self._js = js
        self._sub = subscription
        self._group = subscription.group
        self._settings = settings
        self._metrics = metrics
        self._limit = max(1, subscription.in_flight)
        self._inflight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._psub: JetStreamContext.PullSubscription | None = None
        self._pulled = False  # the current pull loop has fetched at least once

    def stop(self) -> None:
        """Fetch nothing more; handlers in flight go on."""
        self._stopping.set()
        self._slot_freed.set()

    async def drain(self, grace: float) -> None:
        """Wait for in-flight handlers; cancel those still running after ``grace`` seconds."""
        if not self._inflight:
            return
        _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
        for task in pending:
            task.cancel()  # not acked: JetStream redelivers it, the store collapses the repeat
        await asyncio.gather(*pending, return_exceptions=True)

    async def run(self) -> None:
        """Supervise the pull loop: log a failure, wait, start it again; end on ``stop``."""
        delay = RESTART_DELAY
        while not self._stopping.is_set():
            self._pulled = False
            try:
                await self._pull()
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping.is_set():
                    # A fetch cut short by the shutdown (seen as a TimeoutError on SIGTERM):
                    # the stop's doing, not a failure to report and restart from.
                    log.debug("consumer %s: pull ended while stopping", self._group, exc_info=True)
                    return
                # Back off while it keeps failing (e.g. no stream leader), reset once it pulled.
                delay = RESTART_DELAY if self._pulled else min(delay * 2, MAX_RESTART_DELAY)
                log.exception("consumer %s failed; restarting in %.0fs", self._group, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _pull(self) -> None:
        if self._psub is None:
            await self.bind()
        assert self._psub is not None
        psub = self._psub
        try:
            while not self._stopping.is_set():
                free = await self._free_slots()
                if free == 0:
                    break
                try:
                    msgs = await psub.fetch(free, timeout=FETCH_WAIT)
                except nats.errors.TimeoutError:
                    self._pulled = True
                    continue
                self._pulled = True
                for msg in msgs:
                    self._spawn(msg)
        finally:
            self._psub = None
            with contextlib.suppress(nats.errors.Error, ValueError):
                await psub.unsubscribe()

    async def bind(self) -> None:
        """Create the durable consumer (or update it to our settings) and its pull inbox."""
        s = self._settings
        config = ConsumerConfig(
            durable_name=self._group,
            description=f"A2Z SOC role {self._group}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=s.max_deliver,
            backoff=list(s.backoff),  # the first step is also the ack wait
            filter_subject=self._bus.nats_subject(self._sub.prefix + ">"),
            max_ack_pending=MAX_ACK_PENDING,
        )
        await self._js.add_consumer(self._bus.stream, config)  # creates, or updates to ours
        self._psub = await self._js.pull_subscribe_bind(
            durable=self._group, stream=self._bus.stream
        )

    async def watch_exhausted(self, nc: Client) -> None:
        """Dead-letter the messages JetStream gives up on without our handler having said so.

        A handler that fails says so and dead-letters on the last delivery itself. But a batch
        that kills the worker process (out of memory, a crash in a driver), or hangs it until
        it is restarted, is never answered: after ``max_deliver`` deliveries JetStream stops
        delivering it and only publishes a MAX_DELIVERIES advisory. Listening for that (one
        worker of the group per advisory, by queue group) is how it reaches the dead-letter
        stream instead of vanishing.
        """
        subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self._bus.stream}.{self._group}"
        await nc.subscribe(subject, queue=self._group, cb=self._on_exhausted)

    async def _on_exhausted(self, advisory: Msg) -> None:
        try:
            seq = int(json.loads(advisory.data)["stream_seq"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("consumer %s: unreadable max-deliveries advisory: %s", self._group, exc)
            return
        try:
            raw = await self._js.get_msg(self._bus.stream, seq)
        except nats.errors.Error as exc:  # gone already (retention): nothing left to park
            log.error("consumer %s: exhausted message %d not found: %s", self._group, seq, exc)
            return
        msg_id = (raw.headers or {}).get(MSG_ID) or f"{self._bus.stream}:{seq}"
        headers = {
            # The same id as the handler's own dead-lettering: should both happen (a dead-letter
            # published, its term() lost), the dead-letter stream keeps one.
            MSG_ID: f"{self._group}:{msg_id}",
            "A2Z-Reason": "unanswered",
            "A2Z-Error": "the handler never answered: the worker died or hung on every delivery",
            "A2Z-Group": self._group,
            "A2Z-Deliveries": str(self._settings.max_deliver),
            "A2Z-Stream-Seq": str(seq),
            "A2Z-Msg-Id": msg_id,
        }
        try:
            original = self._bus.bus_subject(raw.subject or "")
            subject = self._bus.nats_subject(dead_letter_subject(original))
            await self._bus.publish_raw(
                subject, raw.data or b"", headers, stream=self._bus.dead_letter_stream
            )
        except (BusError, ValueError) as exc:
            log.error("consumer %s: cannot dead-letter exhausted %s: %s", self._group, msg_id, exc)
            return
        self._metrics.bus_dead_lettered.labels(self._group, "unanswered").inc()
        log.error(
            "consumer %s: dead-lettered %s: unanswered after %d deliveries (worker died or hung)",
            self._group, msg_id, self._settings.max_deliver,
        )  # fmt: skip

    async def _free_slots(self) -> int:
        while len(self._inflight) >= self._limit and not self._stopping.is_set():
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return 0 if self._stopping.is_set() else self._limit - len(self._inflight)

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._process(msg))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("consumer %s: message handling failed", self._group, exc_info=exc)

    async def _process(self, msg: Msg) -> None:
        m, group = self._metrics, self._group
        meta = msg.metadata
        m.bus_consumed.labels(group).inc()
        m.bus_consumer_lag.labels(group).set(meta.num_pending)
        if meta.num_delivered > 1:
            m.bus_redelivered.labels(group).inc()
        headers = msg.headers or {}
        msg_id = headers.get(MSG_ID) or f"{meta.stream}:{meta.sequence.stream}"
        message = Message(
            subject=self._bus.bus_subject(msg.subject), payload=msg.data, msg_id=msg_id
        )
        started = time.perf_counter()
        try:
            async with self._working(msg):
                await self._sub.handler(message)
        except ValueError as exc:  # poison: no retry can help
            await self._dead_letter(msg, message, "poison", exc)
            return
        except Exception as exc:
            if meta.num_delivered >= self._settings.max_deliver:
                await self._dead_letter(msg, message, "max_deliver", exc)
                return
            delay = self._delay(meta.num_delivered)
            log.warning(
                "consumer %s: %s failed (delivery %d), retrying in %.0fs: %s",
                group, msg_id, meta.num_delivered, delay, exc,
            )  # fmt: skip
            m.bus_retries.labels(group).inc()
            await msg.nak(delay=delay)
            return
        finally:
            m.bus_handle_seconds.labels(group).observe(time.perf_counter() - started)
        # Fire-and-forget: a lost ack means one redelivery, which the store's key collapses.
        await msg.ack()
        m.bus_acked.labels(group).inc()

    def _delay(self, delivered: int) -> float:
        steps = self._settings.backoff
        return steps[min(delivered, len(steps)) - 1]

    @contextlib.asynccontextmanager
    async def _working(self, msg: Msg) -> AsyncIterator[None]:
        """Tell the server the message is in hand while a slow handler runs (no redelivery)."""
        touch = asyncio.create_task(self._touch(msg, self._settings.backoff[0] / 2))
        try:
            yield
        finally:
            touch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await touch

    async def _touch(self, msg: Msg, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await msg.in_progress()
            except nats.errors.Error as exc:
                log.debug("in-progress ack failed: %s", exc)

    async def _dead_letter(self, msg: Msg, message: Message, reason: str, exc: Exception) -> None:
        """Park the message on the dead-letter stream, then terminate it on this one."""
        meta = msg.metadata
        headers = {
            MSG_ID: f"{self._group}:{message.msg_id}",
            "A2Z-Reason": reason,
            "A2Z-Error": _header_value(f"{type(exc).__name__}: {exc}"),
            "A2Z-Group": self._group,
            "A2Z-Deliveries": str(meta.num_delivered),
            "A2Z-Stream-Seq": str(meta.sequence.stream),
            "A2Z-Msg-Id": message.msg_id,
        }
        subject = self._bus.nats_subject(dead_letter_subject(message.subject))
        try:
            await self._bus.publish_raw(
                subject, msg.data, headers, stream=self._bus.dead_letter_stream
            )
        except BusError as dlq_exc:
            log.error(
                "consumer %s: cannot dead-letter %s: %s", self._group, message.msg_id, dlq_exc
            )
            await msg.nak(delay=self._delay(meta.num_delivered))
            return
        await msg.term()
        self._metrics.bus_dead_lettered.labels(self._group, reason).inc()
        log.error(
            "consumer %s: dead-lettered %s (%s after %d deliveries): %s",
            self._group, message.msg_id, reason, meta.num_delivered, exc,
        )  # fmt: skip


def _header_value(text: str) -> str:
    """A header value: one line, bounded."""
    return " ".join(text.split())[:_HEADER_MAX]
