"""``a2z server --role gateway``: the agent gateway in a process of its own.

The gateway terminates the agents' mutual TLS, decodes their frames, checks quotas and
publishes the batches to JetStream. Run with the REST API (the embedded default), that work
shares the API's event loop and GIL, so a tenant flooding at ten times its quota slows every
other tenant's searches (docs/adr/0020-gateway-role.md). Alone, it needs from the rest of the
deployment only what they already share: PostgreSQL (certificates, revocations, enrolment
tokens, quotas, agent configuration; the API's push signals by LISTEN/NOTIFY), JetStream, and
the data directory's secret and agent root CA. It serves ``/metrics`` and ``/healthz`` on
``--listen``; SIGINT or SIGTERM closes the agents' connections (they reconnect elsewhere and
re-send what was not acked) and flushes the bus.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from a2z.server.app import build_context, start_gateway
from a2z.server.config import ServerRole, Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from a2z.server.gateway import Gateway

log = logging.getLogger(__name__)


def check(settings: Settings) -> None:
    """Refuse settings a gateway process cannot run with (ValueError says why)."""
    if settings.roles != {ServerRole.GATEWAY}:
        raise ValueError(
            "the gateway role runs alone, or with the api role in one process: "
            + "+".join(sorted(settings.roles))
        )
    if settings.bus_url is None:
        # The in-process bus lives and dies with this process: nothing could ever ingest.
        raise ValueError("a separate gateway process needs the JetStream bus (--bus)")
    if settings.agent_port is None:
        raise ValueError("a gateway process needs a port to listen for agents on")
    if settings.database_url.startswith("sqlite"):
        # On SQLite the tenants' rate buckets live in each process's memory (quotas.service):
        # a gateway apart from the api process would give every tenant its rate twice over.
        raise ValueError(
            "a separate gateway process needs PostgreSQL (--db postgresql://...), through"
            " which it shares the tenants' rate limits with the api process"
        )


async def serve_gateway(settings: Settings, stop: asyncio.Event) -> None:
    """Serve agents until ``stop``, then close their connections and the bus."""
    check(settings)
    ctx = await asyncio.to_thread(build_context, settings)
    running: list[Gateway] = []
    httpd, thread = _serve_http(
        settings.host, settings.port, ctx.metrics.registry,
        ready=lambda: bool(running) and running[0].serving,
    )  # fmt: skip
    try:
        await ctx.bus.start()
        running.append(await start_gateway(ctx))
        log.info(
            "agent gateway on %s:%d publishing to %s; metrics on %s:%d",
            settings.agent_host, running[0].port, settings.bus_url,
            settings.host, httpd.server_port,
        )  # fmt: skip
        await stop.wait()
        log.info("gateway closing")
    finally:
        for gateway in running:
            await gateway.close()
        if ctx.signal_relay is not None:
            await asyncio.to_thread(ctx.signal_relay.close)
        await ctx.bus.close()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        await asyncio.to_thread(ctx.sessions.close)


def run_gateway(settings: Settings) -> int:
    """Run the gateway until SIGINT or SIGTERM; returns the exit status."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_gateway(settings, stop)

    asyncio.run(main())
    return 0


class _Quiet(WSGIRequestHandler):
    """No access log line per scrape or probe."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_http(
    host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool]
) -> tuple[WSGIServer, threading.Thread]:
    """``/healthz`` (503 until the gateway listens) and ``/metrics``, on a thread of their own
    so a scrape never waits for the gateway's loop."""
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok = ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [b'{"status":"ok"}' if ok else b'{"status":"starting"}']
        served: Iterable[bytes] = metrics(environ, start_response)
        return served

    wsgi: WSGIApplication = app
    httpd = make_server(host, port, wsgi, ThreadingWSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, name="gateway-http", daemon=True)
    thread.start()
    return httpd, thread
