"""``accel gc``: find (and with ``--delete``, remove) what crashed publishes left in a store."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._store import add_s3_options, store_root
from accel.errors import UsageError
from accel.units import format_bytes

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gc",
        help="list (or --delete) store objects no committed manifest references",
        description="A crashed publish leaves files but no manifest: no hub shows them. "
        "This lists them (dry run, the default) or removes them with --delete. Objects "
        "younger than --min-age are left alone: a publish may still be writing them.",
    )
    p.add_argument(
        "--root",
        required=True,
        type=store_root,
        help="the store: a directory or s3://BUCKET[/PREFIX]",
    )
    add_s3_options(p)
    p.add_argument("--delete", action="store_true", help="remove them (default: only list)")
    p.add_argument(
        "--min-age",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="only objects older than this (default 3600)",
    )
    p.set_defaults(func=_gc)


def _gc(args: argparse.Namespace) -> int:
    from accel.hub.stores import open_store

    if args.min_age < 0:
        raise UsageError(f"--min-age {args.min_age} must not be negative")
    store = open_store(args.root, s3_endpoint=args.s3_endpoint)
    report = store.gc(dry_run=not args.delete, min_age_s=args.min_age)
    for name in report.orphans:
        print(name)
    verb = "removed" if report.removed else "would remove (dry run; --delete removes)"
    print(f"gc {store.description}: {verb} {len(report.orphans)} objects, "
          f"{format_bytes(report.orphan_bytes)}")  # fmt: skip
    return 0
