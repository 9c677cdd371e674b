"""``accel logs export FILE``: one tar.gz with logs, registry and lock records."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, manager_from
from accel._cli._paths import local_path

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("logs", help="export the models dir's logs for a bug report")
    p.description = (
        "Export the models dir's logs, registry and lock records as one tar.gz for a bug report."
    )
    p.epilog = "Example: accel logs export report.tar.gz"
    sub = p.add_subparsers(dest="logs_command", metavar="ACTION", help="export")
    sub.required = True
    e = sub.add_parser("export", help="write logs, registry and lock records to FILE (tar.gz)")
    e.add_argument("file", type=local_path)
    add_common(e, hub=False, json_flag=False)
    e.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    mm = manager_from(args)
    try:
        print(mm.export_logs(args.file))
    finally:
        mm.close()
    return 0
