"""``accel preseed``: bulk-install a node from the hub's ranking or from a list."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from accel._cli._models import add_common, manager_from, split_ref
from accel._cli.install import run_installs
from accel.errors import UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "preseed",
        help="pre-seed a node: the hub's top-N most requested models, or a list",
        description="Install the hub's N most requested models (--top N), or the given "
        "MODEL[@VERSION]s, with one progress display.",
    )
    p.epilog = "Example: accel preseed --top 5"
    p.add_argument(
        "models", nargs="*", metavar="MODEL[@VERSION]", help="these models (instead of --top N)"
    )
    p.add_argument("--top", type=int, metavar="N", help="the N most requested models")
    add_common(p)
    p.add_argument("--limit-rate", metavar="RATE", help="total bandwidth cap, e.g. 50M")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    if bool(args.top) == bool(args.models):
        raise UsageError("give either --top N or a list of models", hint="e.g. --top 5")
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    if args.models:
        refs = [split_ref(r) for r in args.models]
    else:
        mm = manager_from(args, need_hub=True)
        async with mm:
            ranking = await mm.hub.ranking(args.top)
        refs = [(r.model_id, None) for r in ranking]
    if not refs:
        return 0
    return await run_installs(args, refs)
