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

    demo = sub.add_parser("demo", help="server + demo tenant + agent replaying an attack capture")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--data-dir", type=Path, default=Path("a2z-data/demo"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "server":
        return _server(args)
    if args.command == "agent":
        return _agent(args)
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
