"""``accel search [QUERY] [--task T] [--language L]``: what the hub offers.

One line per model: id, default version (and how many versions), its size, task and
languages, then the command that installs it. The catalog is the hub's ``GET
/api/models``; QUERY matches the id or name (case-insensitive substring).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from accel._cli._models import NO_HUB_HINT, apply_settings, emit_json
from accel._cli._table import print_table
from accel.errors import UsageError
from accel.units import format_bytes

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "search",
        help="list the models a hub offers, with versions and sizes",
        description="List the hub's catalog: each model with its default version, size, "
        "task and languages, and the command that installs it. "
        "Example: accel search whisper --language zh",
    )
    p.add_argument(
        "query", nargs="?", default="", metavar="QUERY", help="part of a model id or name"
    )
    p.add_argument("--task", help="only models for this task (e.g. asr, translation)")
    p.add_argument("--language", help="only models for this language (e.g. zh)")
    p.add_argument("--hub", help="hub URL (default: $ACCEL_HUB, the config file's hub)")
    p.add_argument("--token", help="hub token (default: $ACCEL_TOKEN, the config's token_file)")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    apply_settings(args)
    if not args.hub:
        raise UsageError("no hub given", hint=NO_HUB_HINT)
    from accel.manager.hubclient import HubClient

    with tempfile.TemporaryDirectory(prefix="accel-search-") as tmp:
        hub = HubClient(args.hub, Path(tmp), token=args.token)
        models = asyncio.run(hub.catalog(args.task, args.language))
    q = args.query.lower()
    found = [m for m in models if q in m.id.lower() or q in m.name.lower()]
    rows = []
    for m in sorted(found, key=lambda m: m.id):
        default = next((v for v in m.versions if v.version == m.default_version), None)
        if default is None and m.versions:
            default = m.versions[-1]
        if args.json:
            emit_json(m)
            continue
        if default is None:
            rows.append([m.id, "(no versions)", "", "", ""])
            continue
        extra = f" (+{len(m.versions) - 1} more)" if len(m.versions) > 1 else ""
        facts = [x for x in (m.task, ",".join(m.languages)) if x]
        rows.append([f"{m.id}@{default.version}{extra}", format_bytes(default.size_bytes),
                     " ".join(facts), f"accel pull {m.id}@{default.version}"])  # fmt: skip
    print_table(rows, ["MODEL@DEFAULT", "SIZE", "TASK LANGUAGES", "INSTALL WITH"])
    if not found and not args.json:
        print("no model matches" if q or args.task or args.language else "the hub has no models")
    return 0
