"""``accel update``: bring installed models up to date with the hub (only what changed)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from accel._cli._models import Renderer, add_common, emit_json, manager_from

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "update",
        help="install new default versions / changed files of installed models",
    )
    p.description = "For each installed model: install the hub's new default version beside the old one (identical files are linked), and refetch only the files that changed in an installed version; the ready version stays usable until the new content is verified and swapped in."
    p.epilog = "Example: accel update"
    add_common(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    async with manager_from(args, need_hub=not getattr(args, "hf_endpoint", None)) as mm:
        with Renderer(as_json=args.json, quiet=args.quiet) as render:
            mm.subscribe(render)
            updated = await mm.aupdate()
    if args.json:
        emit_json({"type": "updated", "installs": updated})
    elif not updated:
        print("everything is up to date")
    else:
        for key in updated:
            print(f"updated {key}")
    return 0
