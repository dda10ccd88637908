"""The ``a2z`` command: server, agent and demo entry points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a2z.agent.detect import EdgeDetector
    from a2z.server.config import Settings


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at least 1")
    return int(value)


_PEOPLE_ROLES = ["owner", "admin", "analyst", "viewer", "operator"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(prog="a2z", description="A2Z SOC agent and server")
    sub = parser.add_subparsers(dest="command", required=True)

    server = sub.add_parser("server", help="run the backend (embedded: SQLite + in-process bus)")
    server.add_argument("--db", help="database URL (default: SQLite under --data-dir)")
    server.add_argument("--data-dir", type=Path, default=Path("a2z-data"))
    server.add_argument("--listen", type=_listen, default=("127.0.0.1", 8000))
    server.add_argument(
        "--bus",
        help="NATS JetStream servers, e.g. nats://h1:4222,nats://h2:4222 (default: in-process)",
    )
    server.add_argument(
        "--role", action="append", choices=["api", "gateway", "ingest", "detect"],
        help="what this process runs (repeatable; default: all); without api, --listen serves "
        "only /metrics (and /healthz for the gateway); gateway listens on --agent-listen",
    )  # fmt: skip
    server.add_argument("--bus-replicas", type=int, default=1, help="JetStream stream replicas")
    server.add_argument(
        "--agent-listen", type=_listen, default=("127.0.0.1", 8443), help="agent gateway (mTLS)"
    )
    server.add_argument(
        "--gateway-name", action="append", dest="gateway_names",
        help="name agents use to reach the gateway (repeatable; default 127.0.0.1, localhost)",
    )  # fmt: skip
    server.add_argument(
        "--workers", type=_positive, default=1,
        help="API processes sharing --listen (default 1; about one per core, PostgreSQL advised)",
    )  # fmt: skip
    server.add_argument(
        "--auth-cache-seconds", type=float, dest="auth_cache_s",
        help="reuse a verified bearer credential this long (0: look it up on every request). "
        "Default 30, or 0 with --bus, where API processes on other hosts may share the store: "
        "a revocation reaches only the processes sharing this --data-dir at once",
    )  # fmt: skip
    server.add_argument(
        "--no-access-log", action="store_false", dest="access_log",
        help="do not log a line per request (uvicorn's access log: about half the CPU of a "
        "cached read; errors are still logged)",
    )  # fmt: skip
    server.add_argument(
        "--hot-read-ttl-ms", type=int, dest="hot_read_ttl_ms",
        help="serve a rendered events/agents page again for at most this long (0: off). A write "
        "by any process on this --data-dir ends it at once; writers on other hosts are seen "
        "within this bound. Default 1000, or 0 with --bus",
    )  # fmt: skip

    agent = sub.add_parser("agent", help="the network agent")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    replay = agent_sub.add_parser("replay", help="print a capture's records as JSON lines")
    replay.add_argument("file", type=Path)
    _detect_arguments(replay)
    enroll = agent_sub.add_parser(
        "enroll", help="get this agent's certificate with a one-time token"
    )
    enroll.add_argument(
        "--server", required=True, help="agent gateway, e.g. wss://soc.example:8443"
    )
    secret = enroll.add_mutually_exclusive_group(required=True)
    secret.add_argument(
        "--token-file", type=Path, help="file holding the enrollment token (preferred)"
    )
    secret.add_argument("--token", help="the enrollment token (visible in the process list)")
    enroll.add_argument("--ca-pin", required=True, help="SHA-256 of the server's agent root CA")
    enroll.add_argument(
        "--dir", type=Path, default=Path("a2z-agent"), help="where to keep the identity"
    )
    enroll.add_argument("--name", default=socket.gethostname(), help="name shown in the console")
    run = agent_sub.add_parser(
        "run",
        help="capture live (--interface: JSON lines on stdout) or send a capture's records to "
        "the server (--config with --replay)",
    )
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--replay", type=Path, help="capture file to replay to the server")
    source.add_argument("-i", "--interface", help="capture live from this interface (AF_PACKET)")
    run.add_argument(
        "--config", type=Path, help="agent config (from `a2z agent enroll`): ship to the server"
    )
    run.add_argument("--rate", type=float, help="records per second (default: full speed)")
    run.add_argument("--spool-dir", type=Path, help="disk spool for undelivered batches")
    run.add_argument("--spool-max-bytes", type=int, help="spool cap (default 1 GiB)")
    run.add_argument("--bpf", help="kernel capture filter (tcpdump syntax)")
    run.add_argument("--workers", type=int, default=1, help="processes sharing the interface")
    run.add_argument("--max-packets", type=int, help="stop after this many packets")
    run.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    _detect_arguments(run)

    admin = sub.add_parser("admin", help="manage tenants, users, keys and enrollment tokens")
    admin.add_argument("--db", help="database URL (default: SQLite under --data-dir)")
    admin.add_argument("--data-dir", type=Path, default=Path("a2z-data"))
    admin.add_argument("--json", action="store_true", help="print the result as JSON")
    objects = admin.add_subparsers(dest="object", required=True)
    tenant = objects.add_parser("tenant").add_subparsers(dest="verb", required=True)
    tenant.add_parser("create").add_argument("name")
    tenant_set = tenant.add_parser(
        "set", help="retention, data-residency region and ingest limits of a tenant"
    )
    tenant_set.add_argument("tenant", help="tenant name or id")
    tenant_set.add_argument("--retention-days", type=int, help="keep events this many days")
    tenant_set.add_argument(
        "--region", help="data-residency tag recorded on its events ('' clears)"
    )
    for flag, what in (
        ("--events-per-second", "sustained ingest rate ('none': unlimited)"),
        ("--burst", "token bucket size ('none': one second's worth)"),
        ("--max-stored-bytes", "storage limit ('none': unlimited)"),
    ):
        tenant_set.add_argument(flag, type=_limit, default=argparse.SUPPRESS, help=what)
    tenant_set.add_argument(
        "--anomaly-threshold", type=_threshold, default=argparse.SUPPRESS,
        help="anomaly model alert threshold in (0, 1] ('none': the default)",
    )  # fmt: skip
    user = objects.add_parser("user").add_subparsers(dest="verb", required=True)
    user_create = user.add_parser("create", help="password from $A2Z_PASSWORD, else generated")
    user_create.add_argument("--tenant", required=True, help="tenant name or id")
    user_create.add_argument("--email", required=True)
    user_create.add_argument("--role", required=True, choices=_PEOPLE_ROLES)
    key = objects.add_parser("api-key").add_subparsers(dest="verb", required=True)
    key_create = key.add_parser("create")
    key_create.add_argument("--tenant", required=True, help="tenant name or id")
    key_create.add_argument("--role", required=True, choices=_PEOPLE_ROLES)
    key_create.add_argument("--name", default="")
    token = objects.add_parser("enrollment-token").add_subparsers(dest="verb", required=True)
    token_create = token.add_parser("create")
    token_create.add_argument("--tenant", required=True, help="tenant name or id")
    token_create.add_argument("--ttl", default="1h", help="lifetime, e.g. 30m, 1h, 7d")
    token_create.add_argument("--uses", type=int, default=1)
    release = objects.add_parser("release").add_subparsers(dest="verb", required=True)
    release_publish = release.add_parser(
        "publish", help="store and sign an agent package (wheel or zipapp) for agents to upgrade to"
    )
    release_publish.add_argument("file", type=Path)
    release_publish.add_argument("--version", required=True, help="its version (PEP 440)")

    demo = sub.add_parser("demo", help="server + demo tenant + agent replaying an attack capture")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--data-dir", type=Path, default=Path("a2z-data/demo"))
    return parser


def _detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rules", type=Path, action="append", default=[], metavar="PATH",
        help="Sigma rule file or directory to run besides the built-in detections (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--no-detect", action="store_true", help="no edge detection: records only, no alerts"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("a2z").setLevel(logging.INFO)
    if args.command == "server":
        return _server(args)
    if args.command == "agent":
        return _agent(args)
    if args.command == "admin":
        return _admin(args)
    from a2z.demo.runner import run_demo

    return run_demo(port=args.port, data_dir=args.data_dir)


def server_settings(args: argparse.Namespace) -> Settings:
    """The server's settings from ``a2z server``'s arguments."""
    from a2z.server.config import JetStreamSettings, ServerRole, Settings

    host, port = args.listen
    agent_host, agent_port = args.agent_listen
    roles = frozenset(ServerRole(r) for r in args.role) if args.role else frozenset(ServerRole)
    return Settings(
        data_dir=args.data_dir, db_url=args.db, host=host, port=port, agent_host=agent_host,
        # Only a process running the gateway binds the agent port: several processes on one
        # host (api and gateway split) would otherwise fight over it.
        agent_port=agent_port if ServerRole.GATEWAY in roles else None,
        gateway_names=tuple(args.gateway_names or ("127.0.0.1", "localhost")),
        bus_url=args.bus, jetstream=JetStreamSettings(replicas=args.bus_replicas),
        roles=roles, workers=args.workers, auth_cache_s=_auth_cache_s(args),
        hot_read_ttl_ms=_hot_read_ttl_ms(args), freeze_gc=True, access_log=args.access_log,
    )  # fmt: skip


def _server(args: argparse.Namespace) -> int:
    import uvicorn

    from a2z.records import MAX_FRAME_BYTES
    from a2z.server.app import create_app
    from a2z.server.config import EVENT_LOOP, ServerRole
    from a2z.server.http_protocol import HTTP_PROTOCOL

    settings = server_settings(args)
    if ServerRole.API not in settings.roles:
        if ServerRole.GATEWAY in settings.roles:
            from a2z.server.gateway_process import check, run_gateway

            try:
                check(settings)
            except ValueError as exc:
                raise SystemExit(f"a2z server: {exc}") from None
            return run_gateway(settings)
        from a2z.server.workers import run_workers

        return run_workers(settings)
    if settings.workers > 1:
        from a2z.server import prefork

        return prefork.run(settings)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, ws_max_size=MAX_FRAME_BYTES,
        access_log=settings.access_log, loop=EVENT_LOOP, http=HTTP_PROTOCOL,
    )  # fmt: skip
    return 0


def _auth_cache_s(args: argparse.Namespace) -> float:
    """The principal cache's life: off by default in scale-out (``--bus``), where another
    host's API process would not see this host's revocations at once."""
    if args.auth_cache_s is not None:
        if args.auth_cache_s < 0:
            raise SystemExit("a2z server: --auth-cache-seconds must be 0 or more")
        return float(args.auth_cache_s)
    return 0.0 if args.bus else 30.0


def _hot_read_ttl_ms(args: argparse.Namespace) -> int:
    """The page cache's bound: off by default in scale-out (``--bus``), where a write made on
    another host would be seen here only when the page expires."""
    if args.hot_read_ttl_ms is not None:
        if args.hot_read_ttl_ms < 0:
            raise SystemExit("a2z server: --hot-read-ttl-ms must be 0 or more")
        return int(args.hot_read_ttl_ms)
    return 0 if args.bus else 1000


def _agent(args: argparse.Namespace) -> int:
    if args.agent_command == "replay":
        from a2z.agent.detect import DetectConfigError
        from a2z.agent.replay import run_replay

        try:
            detector = _detector(args)
        except DetectConfigError as exc:
            print(f"a2z agent replay: {exc}", file=sys.stderr)
            return 2
        return run_replay(str(args.file), sys.stdout, sys.stderr, detector)
    if args.agent_command == "enroll":
        return _enroll(args)
    if args.interface and args.config is None:
        from a2z.agent.live import run_live

        if args.rules:
            # Worker processes write JSON text straight to stdout here: no stage to hook yet.
            print("a2z agent run: --rules needs --config (the print mode runs no detection)",
                  file=sys.stderr)  # fmt: skip
            return 2

        return run_live(
            args.interface, args.bpf, args.workers, sys.stdout, sys.stderr,
            max_packets=args.max_packets, max_seconds=args.max_seconds,
        )  # fmt: skip
    if args.config is None:
        print("a2z agent run: --replay needs --config (from `a2z agent enroll`)", file=sys.stderr)
        return 2
    return _ship(args)


def _detector(args: argparse.Namespace) -> EdgeDetector | None:
    """The edge detection stage the options ask for; rules that fail to load are reported."""
    from a2z.agent.detect import EdgeDetector, load_rules

    if args.no_detect:
        return None
    rules = None
    if args.rules:
        rules, errors = load_rules(args.rules)
        for error in errors:
            print(f"a2z agent: rule not loaded: {error}", file=sys.stderr)
    return EdgeDetector(rules=rules, rule_paths=args.rules or ())


def _ship_detector(args: argparse.Namespace) -> EdgeDetector | None:
    """As ``_detector``; a rules path that cannot be read is a configuration error here."""
    from a2z.agent.config import ConfigError
    from a2z.agent.detect import DetectConfigError

    try:
        return _detector(args)
    except DetectConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _ship(args: argparse.Namespace) -> int:
    """Replay a capture, or capture live, and deliver the records to the server."""
    from a2z.agent.budget import ResourceGovernor
    from a2z.agent.capture import CaptureError
    from a2z.agent.config import ConfigError, load_config
    from a2z.agent.enroll import EnrollmentError, renew
    from a2z.agent.identity import IdentityFiles
    from a2z.agent.live import live_stream, open_live
    from a2z.agent.protocols.analyzer import AnalyzerSwitch, ProtocolConfig
    from a2z.agent.service import describe, ship_capture, ship_records, spool_settings
    from a2z.agent.ship.channel import ChannelRefused
    from a2z.agent.ship.spool import SpoolError

    detector = None
    try:
        config = load_config(args.config)
        if config.identity_dir and IdentityFiles(Path(config.identity_dir)).renewal_due():
            asyncio.run(renew(config))
        if args.interface and args.workers > 1:
            # Worker processes in one fanout group; started here, so a bad interface or
            # filter fails now. Configurations are relayed to all of them.
            from a2z.agent.workers import AfPacketOpener, WorkerPool

            pool = WorkerPool(AfPacketOpener(args.interface), args.workers, args.bpf)
            pool.start()
            detector = _ship_detector(args)
            stats = asyncio.run(
                ship_records(
                    config, pool.records(args.max_packets, args.max_seconds),
                    spool=spool_settings(
                        config, spool_dir=args.spool_dir, spool_max_bytes=args.spool_max_bytes
                    ), detector=detector, workers=pool, budget=pool.budget,
                )
            )  # fmt: skip
        elif args.interface:
            # Opened here, so a bad interface or filter fails now; pushed configurations
            # retune it while it runs.
            capture = open_live(args.interface, args.bpf)
            # Imported once the ring is open and keeps the traffic (as the detections below).
            from a2z.agent.budget import ResourceGovernor
            from a2z.agent.protocols.analyzer import AnalyzerSwitch, ProtocolConfig

            analyzers = AnalyzerSwitch()
            governor = ResourceGovernor(analyzers)  # budget from pushed configurations
            records = live_stream(
                capture, args.max_packets, args.max_seconds,
                protocols=ProtocolConfig(analyzers=analyzers), governor=governor,
            )  # fmt: skip
            # After the ring is open: loading the detections (and any Sigma rules) takes a
            # moment, and the kernel keeps the traffic of that moment for us.
            detector = _ship_detector(args)
            stats = asyncio.run(
                ship_records(
                    config, records, spool=spool_settings(
                        config, spool_dir=args.spool_dir, spool_max_bytes=args.spool_max_bytes
                    ), capture=capture, detector=detector, analyzers=analyzers,
                    governor=governor,
                )
            )  # fmt: skip
        else:
            detector = _ship_detector(args)
            stats = asyncio.run(
                ship_capture(
                    config, args.replay, rate=args.rate, spool_dir=args.spool_dir,
                    spool_max_bytes=args.spool_max_bytes, detector=detector,
                )
            )  # fmt: skip
    except (ConfigError, CaptureError, ChannelRefused, EnrollmentError, SpoolError) as exc:
        print(f"a2z agent: {exc}", file=sys.stderr)
        return 2
    print(f"a2z agent: {describe(stats)}", file=sys.stderr)
    if detector is not None:
        from a2z.agent.replay import describe_detection

        print(f"a2z agent: edge detection\n{describe_detection(detector)}", end="", file=sys.stderr)
    return 0


def _enroll(args: argparse.Namespace) -> int:
    from a2z.agent.enroll import EnrollmentError, enroll

    try:
        token = args.token if args.token else args.token_file.read_text().strip()
        config = enroll(args.server, token, args.ca_pin, args.dir, args.name)
    except (EnrollmentError, OSError) as exc:
        print(f"a2z agent enroll: {exc}", file=sys.stderr)
        return 2
    print(f"enrolled as agent {config.agent_id}; config in {args.dir / 'agent.json'}")
    return 0


def _limit(text: str) -> int | None:
    """A positive count, or 'none' for unlimited."""
    if text.strip().lower() == "none":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (or 'none')")
    return value


def _threshold(text: str) -> float | None:
    """A score in (0, 1], or 'none' for the model's default."""
    if text.strip().lower() == "none":
        return None
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError("must be in (0, 1] (or 'none')")
    return value


def _tenant_changes(args: argparse.Namespace) -> dict[str, int | float | str | None]:
    changes: dict[str, int | float | str | None] = {}
    if args.retention_days is not None:
        changes["retention_days"] = args.retention_days
    if args.region is not None:
        changes["region"] = args.region or None
    for flag, name in (
        ("events_per_second", "events_per_second"),
        ("burst", "burst_events"),
        ("max_stored_bytes", "max_stored_bytes"),
        ("anomaly_threshold", "anomaly_threshold"),
    ):
        if hasattr(args, flag):  # absent unless given (SUPPRESS): 'none' sets None
            changes[name] = getattr(args, flag)
    return changes


def _admin(args: argparse.Namespace) -> int:
    import json
    import os

    from a2z.server.admin import Admin, parse_duration
    from a2z.server.auth.principal_cache import watch_revocations
    from a2z.server.auth.revocations import RevocationCounter
    from a2z.server.config import Settings
    from a2z.server.errors import A2ZServerError
    from a2z.server.page_cache import PageGenerations
    from a2z.server.store.engine import open_store
    from a2z.server.store.session import SessionFactory
    from a2z.server.tenants.models import Role

    settings = Settings(data_dir=args.data_dir, db_url=args.db)
    engine = open_store(settings.database_url, app_role=settings.app_role, pool_size=1)
    sessions = SessionFactory(engine)
    # A running server on this data directory drops cached principals this command revokes.
    watch_revocations(sessions, RevocationCounter(settings.revocations_path).bump)
    # ... and the pages it changes (agents, users' tenants): their cached copies end at once.
    sessions.watch_writes(PageGenerations(settings.page_generations_path).bump)
    admin = Admin(sessions, settings.data_dir)
    try:
        if args.object == "tenant" and args.verb == "set":
            out = admin.set_tenant(args.tenant, _tenant_changes(args))
        elif args.object == "tenant":
            out = admin.create_tenant(args.name)
        elif args.object == "user":
            password = os.environ.get("A2Z_PASSWORD")
            out = admin.create_user(args.tenant, args.email, Role(args.role), password)
        elif args.object == "api-key":
            out = admin.create_api_key(args.tenant, Role(args.role), args.name)
        elif args.object == "release":
            out = admin.publish_release(args.file, args.version)
        else:
            out = admin.create_enrollment_token(args.tenant, parse_duration(args.ttl), args.uses)
    except A2ZServerError as exc:
        print(f"a2z admin: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(out))
    else:
        print("\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0
