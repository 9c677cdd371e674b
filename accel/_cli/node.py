"""``accel node``: run the node daemon (control API, /events, dashboard, pre-seeding)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from accel._cli._limits import add_limit_options, limits_from
from accel.errors import UsageError
from accel.units import parse_rate

__all__ = ["register"]


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8700")
    return host.strip("[]"), int(port)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "node",
        help="run the node daemon: control API, live dashboard, scheduler reports, pre-seeding",
        description="Run a long-lived node over one models dir. Dashboard at http://LISTEN/, "
        "events at /events, JSON control API under /api/. Stops gracefully on SIGTERM "
        "(downloads stay resumable and resume at the next start).",
    )
    p.epilog = "Example: accel node --hub http://hub:8600 --models-dir /var/lib/accel/models --listen 127.0.0.1:8700"
    p.add_argument(
        "--models-dir",
        help="models dir (default: $ACCEL_MODELS_DIR, the config file's models_dir; a "
        "service names its own, no built-in default)",
    )
    p.add_argument("--hub", help="hub URL (default: $ACCEL_HUB, the config file's hub)")
    p.add_argument("--listen", default="127.0.0.1:8700", help="HOST:PORT (port 0 picks a free one)")
    add_limit_options(p)
    p.add_argument(
        "--scheduler", help="where MODEL_NOT_AVAILABLE reports go: http(s):// or ws(s)://"
    )
    p.add_argument(
        "--scheduler-token",
        help="bearer token for the scheduler (default: $ACCEL_SCHEDULER_TOKEN)",
    )
    p.add_argument(
        "--preseed-top",
        type=int,
        default=0,
        metavar="N",
        help="install the hub's N most requested models (at start and on an interval)",
    )
    p.add_argument(
        "--preseed-interval",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how often to pre-seed the top models again (default: 600)",
    )
    p.add_argument(
        "--token", help="hub token (default: $ACCEL_TOKEN, the config file's token_file)"
    )
    p.add_argument("--node-id", default=socket.gethostname(), help="this node's id in reports")
    p.add_argument(
        "--no-install-missing",
        action="store_true",
        help="the job guard reports missing models but does not install them",
    )
    p.add_argument(
        "--limit-rate",
        help="bandwidth cap for all downloads, e.g. 50M = 50 MiB/s (default: $ACCEL_LIMIT_RATE, "
        "the config file's limit_rate, else none)",
    )
    p.add_argument(
        "--max-parallel-files",
        type=int,
        default=3,
        help="files of one version at once (default: 3)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: INFO)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from accel._cli._models import NO_HUB_HINT, settings, token_from_settings
    from accel.node.daemon import NodeConfig, run_node

    if args.token is None:
        args.token = token_from_settings(settings(args))  # the config's token_file
    if not args.models_dir:
        raise UsageError("--models-dir is required", hint="or set ACCEL_MODELS_DIR")
    if not args.hub:
        raise UsageError("--hub is required", hint=NO_HUB_HINT)
    if args.preseed_top < 0:
        raise UsageError("--preseed-top must be >= 0")
    if args.preseed_interval <= 0:
        raise UsageError("--preseed-interval must be > 0")
    host, port = _listen(args.listen)
    limits = limits_from(args)
    if args.scheduler:
        from accel.node.transport import transport_for_url

        transport_for_url(args.scheduler)  # validates the scheme now, not at the first report
    config = NodeConfig(
        models_dir=Path(args.models_dir),
        hub_url=args.hub,
        host=host,
        port=port,
        scheduler_url=args.scheduler,
        scheduler_token=args.scheduler_token,
        preseed_top=args.preseed_top,
        preseed_interval_s=args.preseed_interval,
        token=args.token,
        node_id=args.node_id,
        install_missing=not args.no_install_missing,
        max_parallel_files=args.max_parallel_files,
        limit_rate=parse_rate(args.limit_rate) if args.limit_rate else None,
        listen_limits=limits,
    )
    # The handler carries the level: library loggers (the manager's) set their own
    # levels for their log files and must not print below --log-level here.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(args.log_level.upper())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, handler.level))

    def ready(url: str) -> None:
        # One machine-readable line on stdout: scripts and tests wait for it.
        print(f"accel node listening on {url}", flush=True)

    asyncio.run(run_node(config, ready=ready))
    return 0
