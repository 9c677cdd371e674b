"""``accel verify [MODEL[@VERSION]]``: re-hash installed files; damaged ones are marked
for ``accel install`` to fetch again (exit 1 if any)."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, emit_json, manager_from, split_ref
from accel.errors import ModelNotAvailableError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("verify", help="re-hash installed files against their SHA256")
    p.description = "Re-hash every file of ready versions against the manifest's SHA256. Damaged files are deleted and the version marked error, so `accel install` fetches just those again; exit 1 if any is damaged or not ready."
    p.epilog = "Example: accel verify whisper-small@1.0"
    p.add_argument(
        "model", nargs="?", metavar="MODEL[@VERSION]", help="only this model (default: all)"
    )
    add_common(p, hub=False)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Say what was found for every version asked about: ok, damaged (which files and
    what was done with them), or not verified because it is not ready."""
    model, version = split_ref(args.model) if args.model else (None, None)
    mm = manager_from(args, existing=True)
    try:
        records = mm.status(model, version)
        results = mm.verify(model, version)
    finally:
        mm.close()
    if not records:
        if model is not None:
            shown = f"{model}@{version}" if version else model
            raise ModelNotAvailableError(
                model,
                version,
                "not_installed",
                message=f"{shown} is not installed in {args.models_dir}: nothing to verify",
                hint="`accel list` shows what is installed",
            )
        if not args.json:
            print(f"nothing installed in {args.models_dir}: nothing to verify")
        return 0
    problems = 0
    for rec in records:
        key = f"{rec.model_id}@{rec.version}"
        if key not in results:
            problems += 1
            why = f" [{rec.error.code}] {rec.error.message}" if rec.error is not None else ""
            if args.json:
                emit_json({"install": key, "ok": False, "state": rec.state, "verified": False})
            else:
                print(f"{key}: not verified: its state is {rec.state}{why}")
                print(f"  `accel install {key}` finishes it, then verify again")
            continue
        bad = results[key]
        problems += bool(bad)
        if args.json:
            emit_json({"install": key, "ok": not bad, "damaged": bad, "verified": True})
        elif not bad:
            print(f"{key}: ok ({len(rec.files)} files match their SHA256)")
        else:
            print(f"{key}: DAMAGED {len(bad)} of {len(rec.files)} files: {', '.join(bad)}")
            print(
                f"  deleted them and marked {key} error; `accel install {key}` fetches "
                "just those files again"
            )
    return 1 if problems else 0
