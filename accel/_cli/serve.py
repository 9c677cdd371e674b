"""``accel serve``: run the model hub over a store (a directory or an S3 bucket)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from accel._cli._limits import add_limit_options, limits_from
from accel._cli._store import add_s3_options, store_root
from accel.errors import ConfigError, UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the model hub (catalog API, ranking, file storage with Range)",
        description="Serve a hub store: /api/models, manifests, usage ranking, /storage "
        "files with Range, an HTML catalog at /. Stops on SIGTERM/SIGINT.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--root", type=store_root, help="the store: a directory, or s3://BUCKET[/PREFIX]"
    )
    where.add_argument("--store", dest="root", type=store_root, help="the same as --root")
    add_s3_options(p)
    p.add_argument(
        "--presign-ttl",
        type=int,
        default=3600,
        help="S3 store: seconds a presigned /storage URL stays valid (default 3600)",
    )
    p.add_argument(
        "--storage-mode",
        choices=("redirect", "proxy"),
        default="redirect",
        help="S3 store: 307 to a presigned URL (default), or stream through the hub",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="S3 store: where usage counts live (default $XDG_STATE_HOME/accel/hub)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8600, help="port (0 picks a free one)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="hub processes sharing the port (SO_REUSEPORT); one Python process uses one core",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    add_limit_options(p)
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="require Authorization: Bearer TOKEN on /api and /storage")
    auth.add_argument("--tokens-file", type=Path, help="file with one accepted token per line")
    p.set_defaults(func=_serve)


def _tokens(args: argparse.Namespace) -> list[str]:
    if args.token is not None:
        if not args.token.strip():
            raise UsageError("--token must not be empty")
        return [args.token.strip()]
    if args.tokens_file is not None:
        try:
            lines = args.tokens_file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"cannot read tokens file {args.tokens_file}: {exc.strerror}",
                hint="give a readable file with one token per line",
            ) from exc
        tokens = [t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")]
        if not tokens:
            raise ConfigError(f"tokens file {args.tokens_file} has no tokens")
        return tokens
    env = os.environ.get("ACCEL_HUB_TOKEN", "").strip()
    return [env] if env else []


def _serve(args: argparse.Namespace) -> int:
    from accel.hub.server import run
    from accel.hub.stores import DirectoryStore, open_store

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is out of range")
    store = open_store(
        args.root,
        s3_endpoint=args.s3_endpoint,
        state_dir=args.state_dir,
        presign_ttl=args.presign_ttl,
        storage_mode=args.storage_mode,
    )
    root = store.description
    if isinstance(store, DirectoryStore) and store.root.exists() and not store.root.is_dir():
        raise ConfigError(f"--root {root} is not a directory")
    tokens = _tokens(args)

    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers {args.workers} must be between 1 and 64")
    limits = limits_from(args)

    def ready(url: str) -> None:
        auth = " (bearer token required)" if tokens else ""
        extra = f" ({args.workers} workers)" if args.workers > 1 else ""
        print(f"accel hub serving {root} at {url}{auth}{extra}", flush=True)

    if args.workers > 1:
        from accel.hub.server import run_workers

        child = [sys.executable, "-m", "accel", "serve", "--root", str(root), "--host", args.host,
                 "--reuse-port", "--workers", "1",  # never a config file's workers
                 "--header-timeout", str(limits.header_timeout_s),
                 "--max-connections", str(limits.max_connections),
                 "--presign-ttl", str(args.presign_ttl), "--storage-mode", args.storage_mode]  # fmt: skip
        if args.s3_endpoint:
            child += ["--s3-endpoint", args.s3_endpoint]
        if args.state_dir is not None:
            child += ["--state-dir", str(args.state_dir)]
        if args.token is not None:
            child += ["--token", args.token]
        elif args.tokens_file is not None:
            child += ["--tokens-file", str(args.tokens_file)]
        try:
            return run_workers(child, args.host, args.port, args.workers, on_ready=ready)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror}",
                hint="pick another --port (0 chooses a free one)",
            ) from exc
    try:
        run(
            store,
            args.host,
            args.port,
            tokens=tokens,
            on_ready=ready,
            reuse_port=args.reuse_port,
            limits=limits,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror}",
            hint="pick another --port (0 chooses a free one)",
        ) from exc
    print("accel hub stopped", file=sys.stderr)
    return 0
