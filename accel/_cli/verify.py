"""``accel verify [MODEL[@VERSION]]``: re-hash installed files; damaged ones are marked
for ``accel install`` to fetch again (exit 1 if any)."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, emit_json, manager_from, split_ref

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("verify", help="re-hash installed files against their SHA256")
    p.add_argument("model", nargs="?", metavar="MODEL[@VERSION]")
    add_common(p, hub=False)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    model, version = split_ref(args.model) if args.model else (None, None)
    mm = manager_from(args)
    try:
        results = mm.verify(model, version)
    finally:
        mm.close()
    damaged = 0
    for key, bad in results.items():
        damaged += len(bad)
        if args.json:
            emit_json({"install": key, "ok": not bad, "damaged": bad})
        else:
            print(f"{key}: {'ok' if not bad else 'DAMAGED ' + ', '.join(bad)}")
    if damaged and not args.json:
        print("run `accel install MODEL@VERSION` to fetch the damaged files again")
    return 1 if damaged else 0
