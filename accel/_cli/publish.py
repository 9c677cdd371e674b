"""``accel publish``: hash a file or directory and add it to a hub store (a directory or
an S3 bucket) as one version."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._paths import local_path
from accel._cli._store import add_s3_options, store_root
from accel.units import format_bytes, parse_size

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "publish",
        help="publish a file or directory into a hub store as MODEL@VERSION",
        description="Hash every file (SHA256 and blake3 blocks), copy it into the store and "
        "write manifest.json and model.json atomically. Re-publishing the same content is a "
        "no-op; different content for an existing version is refused.",
    )
    p.add_argument("src", type=local_path, help="a file, or a directory (subfolders are kept)")
    p.add_argument(
        "--root",
        required=True,
        type=store_root,
        help="the hub store: a directory, or s3://BUCKET[/PREFIX]",
    )
    add_s3_options(p)
    p.add_argument("--model", required=True, help="model id, e.g. whisper-large-v3-zh")
    p.add_argument("--version", required=True, help="version, e.g. 1.0.0")
    p.add_argument("--name", help="human-readable model name")
    p.add_argument("--task", help="task, e.g. asr or mt")
    p.add_argument(
        "--language", action="append", default=[], metavar="L", help="a language (repeatable)"
    )
    p.add_argument("--default", action="store_true", help="make this the default version")
    p.add_argument("--block-size", default="16MiB", help="blake3 block size (default 16MiB)")
    p.add_argument(
        "--mirror",
        action="append",
        default=None,
        metavar="BASE",
        help="a mirror's base URL for this version (repeatable): a file's URL there is "
        "BASE/PATH; given on a re-publish, replaces the version's mirrors",
    )
    p.add_argument(
        "--notify-db",
        metavar="URL",
        help="the hubs' postgresql:// --usage-db: tell every hub at once (LISTEN/NOTIFY); "
        "without it they notice at their next poll",
    )
    p.set_defaults(func=_publish)


def _publish(args: argparse.Namespace) -> int:
    from accel.hub.stores import PublishRequest, open_store

    block = parse_size(args.block_size, option="--block-size")
    mirrors = None if args.mirror is None else [_mirror_base(m) for m in args.mirror]
    store = open_store(args.root, s3_endpoint=args.s3_endpoint)
    manifest = store.publish(
        PublishRequest(
            src=args.src,
            model_id=args.model,
            version=args.version,
            name=args.name,
            task=args.task,
            languages=args.language,
            default=args.default,
            block_size=block,
            mirrors=mirrors,
            progress=lambda line: print(line, flush=True),
        )
    )
    if args.notify_db:
        import sys

        from accel.errors import UsageDbError
        from accel.hub.catalog_feed import notify_published

        try:  # the version is published either way: a failed notice only costs latency
            notify_published(args.notify_db, store.description, manifest.model_id, manifest.version)
        except UsageDbError as exc:
            print(f"accel: warning [{exc.code}]: {exc}", file=sys.stderr)
    print(
        f"published {manifest.model_id}@{manifest.version}: {len(manifest.files)} files, "
        f"{format_bytes(manifest.size_bytes)}, checksum {manifest.checksum_sha256[:16]}"
    )
    return 0


def _mirror_base(value: str) -> str:
    """A mirror base URL: http(s), a host, no query or fragment; no trailing slash."""
    import urllib.parse

    from accel.errors import UsageError

    u = urllib.parse.urlsplit(value)
    if u.scheme not in ("http", "https") or not u.netloc or u.query or u.fragment:
        raise UsageError(
            f"--mirror: expected a base URL like http://mirror.example/models/m/1, got {value!r}"
        )
    return value.rstrip("/")
