"""The agent gateway: the TLS listener agents talk to (separate from the REST API).

Paths:
- ``GET /ca.pem`` — the agent root certificate (agents compare its SHA-256 with their pin);
- ``/enroll`` (WebSocket, no client certificate) — enrollment token + CSR in, certificate out;
- ``/renew`` (WebSocket, client certificate) — CSR in, a fresh certificate for the same agent;
- ``GET /releases/VERSION`` (client certificate) — an agent package, its signed manifest in
  the ``A2Z-Release`` header;
- ``/channel`` (WebSocket, client certificate) — record batches in, acks out; control messages
  both ways: heartbeats and results in, configuration pushes, rule sets and commands out.

The agent's identity is read from its verified client certificate and nothing else. Open
channels re-check their certificate every ``recheck_s`` seconds, so revoking an agent closes
its connection within that time.

Configuration and commands reach a live agent when the API signals a change (in this process,
or in another one through the PostgreSQL relay), when the channel opens, and after every
control message the agent sends (the heartbeat is the safety net for a lost signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from weakref import WeakKeyDictionary

import msgspec
from cryptography import x509
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from a2z.records import MAX_CONTROL_BYTES, MAX_FRAME_BYTES, RulesPush
from a2z.records.release import MANIFEST_HEADER
from a2z.records.ruleset import MAX_RULES_PUSH_BYTES
from a2z.server.agents import channel
from a2z.server.agents.models import Agent
from a2z.server.audit import service as audit
from a2z.server.context import ServerContext
from a2z.server.errors import Unauthenticated
from a2z.server.pki import service as pki
from a2z.server.pki.root import AgentRoot
from a2z.server.pki.x509 import AgentIdentity, cert_pem
from a2z.server.releases import service as releases
from a2z.server.releases.models import AgentRelease
from a2z.server.store.base import utcnow

log = logging.getLogger(__name__)
CLOSE_WAIT_S = 5.0  # longest close() waits for the cancelled connection tasks to unwind


class EnrollRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What an agent sends to /enroll."""

    token: str
    csr: str
    name: str = "agent"


class RenewRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What an agent sends to /renew."""

    csr: str


class Issued(msgspec.Struct):
    """The answer to /enroll and /renew."""

    tenant_id: str
    agent_id: str
    cert: str  # agent certificate + tenant CA, PEM
    root: str  # the root to pin, PEM
    not_after: str
    release_cert: str = ""  # the release-signing certificate (from the root), PEM


@dataclass
class _Live:
    """An open channel, what it authenticated as, and what was pushed on it."""

    identity: AgentIdentity
    serial: str
    pushed_config: int = 0  # the configuration version last sent on this connection
    sent_commands: set[str] = field(default_factory=set)  # command ids sent on it
    pushed_rules: str = ""  # the digest of the rule set last sent on it
    pushed_intel: int = 0  # the intel version last sent on this connection (ADR 12)
    intel_full_retried: bool = False  # a refused delta was followed by the whole set once


@dataclass
class Gateway:
    """Serves agents on ``host:port`` with mutual TLS."""

    ctx: ServerContext
    root: AgentRoot
    host: str = "127.0.0.1"
    port: int = 8443
    recheck_s: float = 30.0
    _live: dict[uuid.UUID, set[ServerConnection]] = field(default_factory=lambda: defaultdict(set))
    # What each connection authenticated as during its handshake, until it goes away.
    _who: WeakKeyDictionary[ServerConnection, _Live] = field(default_factory=WeakKeyDictionary)
    _server: Server | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        """Listen; returns once the socket is bound."""
        self._loop = asyncio.get_running_loop()
        self.ctx.signals.subscribe(self._signalled)
        self._server = await serve(
            self._route,
            self.host,
            self.port,
            ssl=self.root.server_context(),
            process_request=self._process_request,
            max_size=MAX_FRAME_BYTES,
        )
        if self.port == 0:
            self.port = next(iter(self._server.sockets)).getsockname()[1]

    @property
    def serving(self) -> bool:
        """Listening for agents (what the gateway process's ``/healthz`` reports)."""
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self.ctx.signals.unsubscribe(self._signalled)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # let their handlers unwind (close sockets, note the disconnection) first
            await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- handshake -----------------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ca.pem":
            return Response(
                HTTPStatus.OK.value,
                "OK",
                Headers([("Content-Type", "application/x-pem-file")]),
                cert_pem(self.root.cert),
            )
        if path == "/enroll":
            return None
        release = path.startswith("/releases/")
        if path not in ("/channel", "/renew") and not release:
            return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")
        der = _peer_certificate(conn)
        if der is None:
            self.ctx.metrics.auth_failures.labels("agent").inc()
            return conn.respond(HTTPStatus.UNAUTHORIZED, "client certificate required\n")
        try:
            # A query: in a thread, so a handshake never stalls the loop that serves the REST
            # API and every other agent (seen as search latency under a reconnecting flood).
            identity = await asyncio.to_thread(
                pki.authenticate_certificate, sessions=self.ctx.sessions, der=der
            )
        except Unauthenticated as exc:
            self.ctx.metrics.auth_failures.labels("agent").inc()
            log.warning("refused agent certificate: %s", exc)
            return conn.respond(HTTPStatus.FORBIDDEN, "certificate refused\n")
        if release:
            return await self._release(conn, path.removeprefix("/releases/"))
        self._who[conn] = _Live(identity, _serial(der))
        return None

    async def _release(self, conn: ServerConnection, version: str) -> Response:
        """An agent package and its manifest, to an authenticated agent."""
        try:
            found = await asyncio.to_thread(self._read_release, version)
        except OSError as exc:
            log.error("release %s is published but its package is unreadable: %s", version, exc)
            return conn.respond(HTTPStatus.INTERNAL_SERVER_ERROR, "package unavailable\n")
        if found is None:
            return conn.respond(HTTPStatus.NOT_FOUND, "no such release\n")
        row, body = found
        headers = Headers(
            [
                ("Content-Type", "application/octet-stream"),
                (MANIFEST_HEADER, releases.manifest_header(row)),
            ]
        )
        self.ctx.metrics.control_sent.labels("release").inc()
        return Response(HTTPStatus.OK.value, "OK", headers, body)

    def _read_release(self, version: str) -> tuple[AgentRelease, bytes] | None:
        """The release row and its package (blocking: a thread's work), None if unpublished."""
        with self.ctx.sessions.system() as session:
            row = session.get(AgentRelease, version[:40])
        if row is None:
            return None
        return row, releases.package_path(self.ctx.settings.data_dir, row).read_bytes()

    async def _route(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        path = conn.request.path.split("?", 1)[0]
        if path == "/enroll":
            await self._enroll(conn)
        elif path == "/renew":
            await self._renew(conn, self._who[conn])
        else:
            await self._channel(conn, self._who[conn])

    # -- enrollment and renewal ----------------------------------------------------------

    async def _enroll(self, conn: ServerConnection) -> None:
        async def issue(raw: str) -> pki.Issued:
            req = msgspec.json.decode(raw, type=EnrollRequest)
            return await asyncio.to_thread(
                pki.enroll, sessions=self.ctx.sessions, root=self.root, secret=self.ctx.secret,
                token=req.token, csr_pem=req.csr.encode(), name=req.name[:200],
                source=_peer_host(conn),
            )  # fmt: skip

        if not await self._exchange(conn, issue):
            self.ctx.metrics.auth_failures.labels("enroll").inc()

    async def _renew(self, conn: ServerConnection, live: _Live) -> None:
        async def issue(raw: str) -> pki.Issued:
            req = msgspec.json.decode(raw, type=RenewRequest)
            return await asyncio.to_thread(
                pki.renew, sessions=self.ctx.sessions, root=self.root, secret=self.ctx.secret,
                identity=live.identity, csr_pem=req.csr.encode(),
            )  # fmt: skip

        await self._exchange(conn, issue)

    async def _exchange(
        self, conn: ServerConnection, issue: Callable[[str], Awaitable[pki.Issued]]
    ) -> bool:
        """One JSON request in, one certificate out; any refusal closes with 1008."""
        try:
            raw = await asyncio.wait_for(conn.recv(), timeout=30)
            if not isinstance(raw, str) or len(raw) > MAX_CONTROL_BYTES:
                raise Unauthenticated("expected one JSON text message")
            issued = await issue(raw)
        except (Unauthenticated, msgspec.DecodeError, TimeoutError) as exc:
            await conn.close(1008, str(exc)[:120])
            return False
        await conn.send(msgspec.json.encode(_issued(issued, self.ctx.release_cert)).decode())
        await conn.close()
        return True

    # -- the record channel --------------------------------------------------------------

    async def _channel(self, conn: ServerConnection, live: _Live) -> None:
        agent = live.identity.agent_id
        peers = self._live[agent]
        if peers:
            await asyncio.to_thread(self._flag_clone, live.identity, conn, peers)
        peers.add(conn)
        watchdog = asyncio.create_task(self._watch(conn, live))
        try:
            await self._deliver(
                conn, live, await asyncio.to_thread(channel.due, self.ctx, live.identity)
            )
            async for frame in conn:
                if isinstance(frame, str):
                    due = await asyncio.to_thread(
                        channel.handle_control, self.ctx, live.identity, frame
                    )
                    await self._deliver(conn, live, due)
                    continue
                await conn.send(await channel.handle_frame(self.ctx, live.identity, frame))
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            peers.discard(conn)

    async def _deliver(self, conn: ServerConnection, live: _Live, due: channel.Due | None) -> None:
        """Send what the agent is due and this connection has not carried yet."""
        if due is None:
            return
        if due.config is not None and due.config.version != live.pushed_config:
            live.pushed_config = due.config.version
            await conn.send(_encode(due.config).decode())
            self.ctx.metrics.control_sent.labels("config").inc()
        if due.rules is not None and due.rules.digest != live.pushed_rules:
            live.pushed_rules = due.rules.digest
            await self._push_rules(conn, live, due.rules)
        await self._deliver_intel(conn, live, due)
        for command in due.commands:
            if command.id not in live.sent_commands:
                live.sent_commands.add(command.id)
                await conn.send(_encode(command).decode())
                self.ctx.metrics.control_sent.labels("command").inc()
                await asyncio.to_thread(channel.mark_sent, self.ctx, live.identity, command.id)

    async def _push_rules(self, conn: ServerConnection, live: _Live, push: RulesPush) -> None:
        frame = _encode(push)
        if len(frame) > MAX_RULES_PUSH_BYTES:
            # Sent once per connection at most (pushed_rules); the agent keeps its set.
            self.ctx.metrics.control_sent.labels("rules_too_large").inc()
            log.error(
                "rule set %s for agent %s is %d bytes, over the %d-byte limit: not sent",
                push.digest[:12], live.identity.agent_id, len(frame), MAX_RULES_PUSH_BYTES,
            )  # fmt: skip
            return
        await conn.send(frame.decode())
        self.ctx.metrics.control_sent.labels("rules").inc()

    async def _deliver_intel(self, conn: ServerConnection, live: _Live, due: channel.Due) -> None:
        """The intel delta (or whole set) the agent needs, once per version per connection."""
        base = due.intel_base
        if due.intel_refused and not live.intel_full_retried:
            # The agent refused a delta (e.g. its set was lost): the whole set, once.
            live.intel_full_retried, live.pushed_intel, base = True, 0, 0
        if due.intel_target is None or due.intel_target == live.pushed_intel:
            return
        live.pushed_intel = due.intel_target
        pushes = await asyncio.to_thread(channel.intel_pushes, self.ctx, live.identity, base)
        for push in pushes:
            await conn.send(_encode(push).decode())
            self.ctx.metrics.control_sent.labels("intel").inc()

    async def _due(self, live: _Live) -> channel.Due | None:
        return await asyncio.to_thread(channel.due, self.ctx, live.identity)

    def _signalled(self, tenant_id: uuid.UUID, agent_ids: list[uuid.UUID]) -> None:
        # Called from an API worker thread after its commit: hop onto the gateway's loop.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._refresh_all, tenant_id, list(agent_ids))

    def _refresh_all(self, tenant_id: uuid.UUID, agent_ids: list[uuid.UUID]) -> None:
        for agent_id in agent_ids:
            for conn in list(self._live.get(agent_id, ())):
                live = self._who.get(conn)
                if live is None or live.identity.tenant_id != tenant_id:
                    continue
                task = asyncio.create_task(self._refresh(conn, live))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _refresh(self, conn: ServerConnection, live: _Live) -> None:
        try:
            await self._deliver(
                conn, live, await asyncio.to_thread(channel.due, self.ctx, live.identity)
            )
        except ConnectionClosed:
            pass  # the agent gets it when it reconnects
        except Exception:  # a failed push must not go unnoticed, nor take the gateway down
            log.exception("pushing to agent %s failed", live.identity.agent_id)

    async def _watch(self, conn: ServerConnection, live: _Live) -> None:
        while True:
            await asyncio.sleep(self.recheck_s)
            ok = await asyncio.to_thread(
                pki.still_valid,
                sessions=self.ctx.sessions,
                identity=live.identity,
                serial=live.serial,
            )
            if not ok:
                log.warning(
                    "closing channel of agent %s: certificate revoked", live.identity.agent_id
                )
                await conn.close(1008, "certificate revoked")
                return

    def _flag_clone(
        self, identity: AgentIdentity, conn: ServerConnection, peers: set[ServerConnection]
    ) -> None:
        # Two live connections with one identity: the agent's key was copied (or an old process
        # lingers). Flag it for a person to look at; both keep streaming (dedup makes it safe).
        self.ctx.metrics.clones.inc()
        with self.ctx.sessions.tenant(identity.tenant_id) as session:
            agent = session.get(Agent, (identity.tenant_id, identity.agent_id))
            if agent is not None:
                agent.clone_suspected_at = utcnow()
            others = sorted(_peer_host(p) for p in peers)
            audit.record(
                session=session,
                actor=f"agent:{identity.agent_id}",
                action="agent.clone_suspected",
                target=f"agent:{identity.agent_id}",
                source=_peer_host(conn),
                outcome="failure",
                detail={"other_connections": others},
            )


_encode = msgspec.json.Encoder().encode


def _issued(issued: pki.Issued, release_cert: bytes) -> Issued:
    return Issued(
        tenant_id=str(issued.identity.tenant_id),
        agent_id=str(issued.identity.agent_id),
        cert=issued.cert_pem,
        root=issued.root_pem,
        not_after=issued.not_after,
        release_cert=release_cert.decode(),
    )


def _peer_certificate(conn: ServerConnection) -> bytes | None:
    ssl_object: ssl.SSLObject | None = conn.transport.get_extra_info("ssl_object")
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def _serial(der: bytes) -> str:
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def _peer_host(conn: ServerConnection) -> str:
    addr = conn.remote_address
    return str(addr[0]) if addr else ""
