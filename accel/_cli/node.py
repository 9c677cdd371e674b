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


def _listen(text: str, flag: str = "--listen", example: str = "127.0.0.1:8700") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag} {text!r} is not HOST:PORT", hint=f"e.g. {flag} {example}")
    return host.strip("[]"), int(port)


_LOOPBACK = ("127.", "::1", "localhost")


def _peer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The NodeConfig fields of the peer server, checked (UsageError for bad input)."""
    import os
    import re

    from accel.schema import NODE_ID_PATTERN

    token = (
        args.peer_token if args.peer_token is not None else os.environ.get("ACCEL_PEER_TOKEN", "")
    ).strip()
    if args.peer_token is not None and not token:
        raise UsageError("--peer-token must not be empty")
    if not args.serve_peers:
        return {"peer_token": token or None, "zone": args.zone}
    host, port = _listen(args.peer_listen, "--peer-listen", "0.0.0.0:8701")
    if not token and not host.startswith(_LOOPBACK):
        raise UsageError(
            f"--serve-peers on {args.peer_listen} needs a fleet token: other machines can reach it",
            hint="pass --peer-token T (or set ACCEL_PEER_TOKEN), or --peer-listen 127.0.0.1:PORT",
        )
    if args.peer_max_clients < 1:
        raise UsageError("--peer-max-clients must be >= 1")
    limit = parse_rate(args.peer_upload_limit) if args.peer_upload_limit else None
    if limit is not None and limit <= 0:
        raise UsageError("--peer-upload-limit must be > 0")
    if args.peer_url is not None and not re.match(r"^https?://[!-~]+$", args.peer_url):
        raise UsageError(f"--peer-url {args.peer_url!r} is not an http(s) URL")
    if not re.match(NODE_ID_PATTERN, args.node_id):
        raise UsageError(
            f"--node-id {args.node_id!r} cannot be announced to the tracker",
            hint="a node id is letters, digits and . _ : - (at most 128), e.g. --node-id gpu-17",
        )
    if len(args.zone) > 64:
        raise UsageError("--zone is at most 64 characters")
    return {
        "serve_peers": True,
        "peer_host": host,
        "peer_port": port,
        "peer_url": args.peer_url.rstrip("/") if args.peer_url else None,
        "peer_token": token or None,
        "peer_upload_limit": limit,
        "peer_max_clients": args.peer_max_clients,
        "zone": args.zone,
    }


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "node",
        help="run the node daemon: control API, live dashboard, scheduler reports, pre-seeding",
        description="Run a long-lived node over one models dir. Dashboard at http://LISTEN/, "
        "events at /events, JSON control API under /api/. Stops gracefully on SIGTERM "
        "(downloads stay resumable and resume at the next start).",
    )
    p.epilog = (
        "Example: accel node --hub http://hub:8600 --models-dir /var/lib/accel/models "
        "--listen 127.0.0.1:8700. A node of a fleet that shares with its peers adds: "
        '--serve-peers --peer-token "$FLEET_TOKEN" --zone rack-3 --peer-upload-limit 500M'
    )
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
    peers = p.add_argument_group(
        "serving peers",
        "Other nodes of the fleet read this node's ready files, and the verified blake3 "
        "blocks of files still downloading, from a read-only listener of its own "
        "(GET/HEAD /storage/models/ID/VERSION/PATH, as the hub serves them; ?have lists "
        "the blocks held). With --hub, the node announces what it holds to the hub's "
        "tracker at start, as installs progress and as a heartbeat.",
    )
    peers.add_argument(
        "--serve-peers",
        action="store_true",
        help="serve this node's files to other nodes and announce them to the hub",
    )
    peers.add_argument(
        "--peer-listen",
        default="0.0.0.0:8701",
        metavar="HOST:PORT",
        help="the peer server's address, never the control API's (default: 0.0.0.0:8701; "
        "port 0 picks a free one)",
    )
    peers.add_argument(
        "--peer-url",
        metavar="URL",
        help="the URL other nodes reach the peer server at, as announced (default: "
        "http://ADDRESS:PORT, ADDRESS this host's address towards the hub for a "
        "wildcard --peer-listen)",
    )
    peers.add_argument(
        "--peer-token",
        metavar="T",
        help="the fleet token: every peer request must carry 'Authorization: Bearer T', "
        "and announces to the hub carry it (default: $ACCEL_PEER_TOKEN; required when "
        "--peer-listen is not a loopback address)",
    )
    peers.add_argument(
        "--peer-upload-limit",
        metavar="RATE",
        help="cap on the bytes per second sent to all peers together, e.g. 50M = 50 MiB/s "
        "(default: none)",
    )
    peers.add_argument(
        "--peer-max-clients",
        type=int,
        default=32,
        metavar="N",
        help="peer transfers at once; past it a peer gets 503 with Retry-After and asks "
        "another source (default: 32)",
    )
    peers.add_argument(
        "--zone",
        default="",
        metavar="LABEL",
        help="this node's zone (rack, region) in announces: the tracker hands out "
        "same-zone peers first (default: none)",
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
    peer_options = _peer_options(args)
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
        **peer_options,
    )
    # The handler carries the level: library loggers (the manager's) set their own
    # levels for their log files and must not print below --log-level here.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(args.log_level.upper())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, handler.level))

    def ready(url: str, peer_url: str | None = None) -> None:
        # Machine-readable lines on stdout: scripts and tests wait for them.
        print(f"accel node listening on {url}", flush=True)
        if peer_url:
            print(f"accel node serving peers on {peer_url}", flush=True)

    asyncio.run(run_node(config, ready=ready))
    return 0
