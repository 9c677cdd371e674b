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
    p.add_argument(
        "--usage-db",
        metavar="URL",
        type=_usage_db_url,
        default=None,
        help="where usage counts live: postgresql://USER[:PASS]@HOST[:PORT]/DB, shared by "
        "several hubs behind one address (default: $ACCEL_USAGE_DB, which keeps a password "
        "out of the process list, else SQLite in the store or --state-dir); publish notices "
        "on it reach every hub at once",
    )
    p.add_argument(
        "--report-timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="how long POST /api/model-usage waits for the usage database before it "
        "answers 503 (and counts nothing) (default 5)",
    )
    p.add_argument(
        "--catalog-poll",
        metavar="SECONDS",
        type=float,
        default=2.0,
        help="S3 store: how often the hub looks for new publishes (default 2)",
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
    p.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="a mirror of this hub's files, added to every manifest (repeatable): a prefix "
        "under which it keeps PREFIX/MODEL/VERSION/PATH, or a template with {model_id} and "
        "{version}",
    )
    add_limit_options(p)
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="require Authorization: Bearer TOKEN on /api and /storage")
    auth.add_argument("--tokens-file", type=Path, help="file with one accepted token per line")
    p.add_argument(
        "--peer-token",
        help="the fleet token: the peer tracker's routes (/api/peers/announce, "
        ".../peers) need it or a hub token (env ACCEL_PEER_TOKEN)",
    )
    p.add_argument(
        "--peer-ttl",
        type=float,
        default=30.0,
        help="seconds an announce keeps a node listed; nodes announce every ttl/3 (default 30)",
    )
    p.set_defaults(func=_serve)


def _usage_db_url(value: str) -> str:
    """An argparse ``type``: only ``postgresql://`` URLs (SQLite is the default, no flag)."""
    if not value.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"--usage-db {value!r} is not a postgresql:// URL",
            hint="give postgresql://USER@HOST:PORT/DB; without --usage-db counts stay in SQLite",
        )
    return value


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

    if args.usage_db is None and os.environ.get("ACCEL_USAGE_DB"):
        args.usage_db = _usage_db_url(os.environ["ACCEL_USAGE_DB"])
    if not 0.1 <= args.report_timeout <= 600:
        raise UsageError(f"--report-timeout {args.report_timeout:g} must be between 0.1 and 600 s")
    if not 0.1 <= args.catalog_poll <= 3600:
        raise UsageError(f"--catalog-poll {args.catalog_poll:g} must be between 0.1 and 3600 s")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is out of range")
    store = open_store(
        args.root,
        s3_endpoint=args.s3_endpoint,
        state_dir=args.state_dir,
        presign_ttl=args.presign_ttl,
        storage_mode=args.storage_mode,
        poll_s=args.catalog_poll,
    )
    root = store.description
    if isinstance(store, DirectoryStore) and store.root.exists() and not store.root.is_dir():
        raise ConfigError(f"--root {root} is not a directory")
    tokens = _tokens(args)
    mirrors = [_mirror(m) for m in args.mirror]
    peer_token = (args.peer_token or os.environ.get("ACCEL_PEER_TOKEN", "")).strip()
    if args.peer_token is not None and not peer_token:
        raise UsageError("--peer-token must not be empty")
    if not 1 <= args.peer_ttl <= 3600:
        raise UsageError(f"--peer-ttl {args.peer_ttl:g} must be between 1 and 3600 s")

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
        for m in args.mirror:
            child += ["--mirror", m]
        if args.usage_db is not None:  # through the environment: not in the process list
            os.environ["ACCEL_USAGE_DB"] = args.usage_db
        child += ["--catalog-poll", str(args.catalog_poll)]
        child += ["--report-timeout", str(args.report_timeout)]
        child += ["--peer-ttl", str(args.peer_ttl)]
        if peer_token:  # through the environment: not in the process list
            os.environ["ACCEL_PEER_TOKEN"] = peer_token
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
            mirrors=mirrors,
            usage_db=args.usage_db,
            report_timeout_s=args.report_timeout,
            peer_tokens=[peer_token] if peer_token else [],
            peer_ttl=args.peer_ttl,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror}",
            hint="pick another --port (0 chooses a free one)",
        ) from exc
    print("accel hub stopped", file=sys.stderr)
    return 0


def _mirror(value: str) -> str:
    """A hub mirror: an http(s) prefix or template, no query or fragment."""
    import urllib.parse

    u = urllib.parse.urlsplit(value.replace("{model_id}", "m").replace("{version}", "v"))
    if u.scheme not in ("http", "https") or not u.netloc or u.query or u.fragment:
        raise UsageError(
            f"--mirror: expected an http(s) URL prefix or template, got {value!r}",
            hint="e.g. --mirror http://mirror.example/models or "
            "--mirror 'http://mirror.example/{model_id}/{version}'",
        )
    return value
