"""``accel status [MODEL[@VERSION]]``: state, progress and last error of each version."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, emit_json, manager_from, split_ref
from accel.units import format_bytes

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status", help="state of every model version in the models dir (or of one)"
    )
    p.description = "Print each model version's state (queued, downloading, paused, verifying, ready, error), bytes received and total, and its last error; for an install running now, live bytes, speed and ETA."
    p.epilog = "Example: accel status whisper-small --json"
    p.add_argument(
        "model", nargs="?", metavar="MODEL[@VERSION]", help="only this model (default: all)"
    )
    add_common(p, hub=False)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    model, version = split_ref(args.model) if args.model else (None, None)
    mm = manager_from(args, existing=True)
    try:
        for rec in mm.status(model, version):
            if args.json:
                emit_json(rec)
                continue
            line = (
                f"{rec.model_id}@{rec.version}\t{rec.state}\t"
                f"{format_bytes(rec.bytes_done)}/{format_bytes(rec.bytes_total)}"
            )
            if rec.error is not None:
                line += f"\t[{rec.error.code}] {rec.error.message}"
            print(line)
            if rec.update is not None:
                up = rec.update
                line = (
                    f"  update to {up.checksum_sha256[:12]}\t{up.state}\t"
                    f"{format_bytes(up.bytes_done)}/{format_bytes(up.bytes_total)}"
                )
                if up.error is not None:
                    line += f"\t[{up.error.code}] {up.error.message}"
                print(line + "\t(the ready version stays in use until it is swapped in)")
            for f in rec.files:
                if f.state == "error" and f.error is not None:
                    print(f"  {f.path}: [{f.error.code}] {f.error.message}")
    finally:
        mm.close()
    return 0
