"""``accel list``: the ready model versions of a models dir."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, emit_json, manager_from
from accel.units import format_bytes

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("list", help="list the installed (ready) model versions")
    p.description = (
        "List the installed model versions that are ready to use, with their size and path."
    )
    p.epilog = "Example: accel list"
    add_common(p, hub=False)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    mm = manager_from(args, existing=True)
    try:
        for rec in mm.list_installed():
            if args.json:
                emit_json(rec)
            else:
                print(f"{rec.model_id}@{rec.version}\t{format_bytes(rec.bytes_total)}\t{rec.path}")
    finally:
        mm.close()
    return 0
