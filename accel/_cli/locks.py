"""``accel locks [--clean]``: show lock records and their holders; clean dead ones."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, emit_json, manager_from

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "locks", help="show install locks and their holders (--clean removes dead ones)"
    )
    p.description = "Show the lock records of installs in the models dir: who holds each (pid, host) and how fresh its heartbeat is. --clean removes the records of dead holders."
    p.epilog = "Example: accel locks --clean"
    add_common(p, hub=False)
    p.add_argument(
        "--clean",
        action="store_true",
        help="remove records whose holder is dead (pid gone or reused) or over an hour old",
    )
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    mm = manager_from(args, existing=True)  # start-up already cleans dead holders' records
    try:
        if args.clean:
            for name, why in mm.cleanup_locks():
                print(f"removed {name} ({why})")
        records = mm.lock_records()
        if not records and not args.json:
            print(f"no locks held in {args.models_dir} (no install is running)")
        for item in records:
            if args.json:
                emit_json(item)
            elif item["status"] == "unreadable":
                print(f"{item['name']}\tunreadable")
            else:
                print(
                    f"{item['name']}\t{item['status']}\tpid {item['pid']} on {item['hostname']}"
                    f"\theartbeat {item['heartbeat_age_s']} s ago (timeout {item['timeout_s']:.0f} s)"
                )
    finally:
        mm.close()
    return 0
