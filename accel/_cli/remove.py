"""``accel remove MODEL[@VERSION]``: delete a version (or all versions of a model)."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, manager_from, split_ref
from accel.errors import ModelNotAvailableError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("remove", help="remove installed model versions")
    p.description = "Delete a model version (or every version of MODEL) from the models dir. Files shared by hard link with another version stay there."
    p.epilog = "Example: accel remove whisper-small@1.0"
    p.add_argument(
        "model", metavar="MODEL[@VERSION]", help="a version, or MODEL alone for all its versions"
    )
    add_common(p, hub=False, json_flag=False)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    model, version = split_ref(args.model)
    mm = manager_from(args, existing=True)
    try:
        removed = mm.remove(model, version)
    finally:
        mm.close()
    if not removed:
        shown = f"{model}@{version}" if version else model
        raise ModelNotAvailableError(
            model,
            version,
            "not_installed",
            message=f"{shown} is not installed in {args.models_dir}: nothing to remove",
            hint="`accel list` shows what is installed",
        )
    for key in removed:
        print(f"removed {key}")
    return 0
