"""The ``a2z`` command: server, agent and demo entry points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port)


_PEOPLE_ROLES = ["owner", "admin", "analyst", "viewer", "operator"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(prog="a2z", description="A2Z SOC agent and server")
    sub = parser.add_subparsers(dest="command", required=True)

    server = sub.add_parser("server", help="run the backend (embedded: SQLite + in-process bus)")
    server.add_argument("--db", help="database URL (default: SQLite under --data-dir)")
    server.add_argument("--data-dir", type=Path, default=Path("a2z-data"))
    server.add_argument("--listen", type=_listen, default=("127.0.0.1", 8000))

    agent = sub.add_parser("agent", help="the network agent")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    replay = agent_sub.add_parser("replay", help="print a capture's records as JSON lines")
    replay.add_argument("file", type=Path)
    run = agent_sub.add_parser("run", help="send records to the server")
    run.add_argument("--config", type=Path, required=True, help="agent config file (JSON, 0600)")
    run.add_argument("--replay", type=Path, required=True, help="capture file to replay")
    run.add_argument("--rate", type=float, help="records per second (default: full speed)")

    admin = sub.add_parser("admin", help="manage tenants, users, keys and enrollment tokens")
    admin.add_argument("--db", help="database URL (default: SQLite under --data-dir)")
    admin.add_argument("--data-dir", type=Path, default=Path("a2z-data"))
    admin.add_argument("--json", action="store_true", help="print the result as JSON")
    objects = admin.add_subparsers(dest="object", required=True)
    tenant = objects.add_parser("tenant").add_subparsers(dest="verb", required=True)
    tenant.add_parser("create").add_argument("name")
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

    demo = sub.add_parser("demo", help="server + demo tenant + agent replaying an attack capture")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--data-dir", type=Path, default=Path("a2z-data/demo"))
    return parser


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


def _server(args: argparse.Namespace) -> int:
    import uvicorn

    from a2z.records import MAX_FRAME_BYTES
    from a2z.server.app import create_app
    from a2z.server.config import Settings

    host, port = args.listen
    settings = Settings(data_dir=args.data_dir, db_url=args.db, host=host, port=port)
    uvicorn.run(create_app(settings), host=host, port=port, ws_max_size=MAX_FRAME_BYTES)
    return 0


def _agent(args: argparse.Namespace) -> int:
    if args.agent_command == "replay":
        from a2z.agent.replay import run_replay

        return run_replay(str(args.file), sys.stdout, sys.stderr)
    from a2z.agent.capture import CaptureError
    from a2z.agent.config import ConfigError, load_config
    from a2z.agent.service import ship_capture
    from a2z.agent.ship.channel import ChannelRefused

    try:
        config = load_config(args.config)
        stats = asyncio.run(ship_capture(config, args.replay, rate=args.rate))
    except (ConfigError, CaptureError, ChannelRefused) as exc:
        print(f"a2z agent: {exc}", file=sys.stderr)
        return 2
    print(
        f"a2z agent: delivered {stats.records_acked} records in {stats.batches_acked} batches "
        f"({stats.resends} re-sent, {stats.reconnects} reconnects, {len(stats.refused)} refused)",
        file=sys.stderr,
    )
    return 0


def _admin(args: argparse.Namespace) -> int:
    import json
    import os

    from a2z.server.admin import Admin, parse_duration
    from a2z.server.config import Settings
    from a2z.server.errors import A2ZServerError
    from a2z.server.store.engine import open_store
    from a2z.server.store.session import SessionFactory
    from a2z.server.tenants.models import Role

    settings = Settings(data_dir=args.data_dir, db_url=args.db)
    engine = open_store(settings.database_url, app_role=settings.app_role, pool_size=1)
    admin = Admin(SessionFactory(engine))
    try:
        if args.object == "tenant":
            out = admin.create_tenant(args.name)
        elif args.object == "user":
            password = os.environ.get("A2Z_PASSWORD")
            out = admin.create_user(args.tenant, args.email, Role(args.role), password)
        elif args.object == "api-key":
            out = admin.create_api_key(args.tenant, Role(args.role), args.name)
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
