"""``accel path MODEL[@VERSION]``: the path of a ready version, for scripts.

Prints the path alone on stdout (exit 0), or one line on stderr with the reason code
(``not_installed``, ``downloading``, ...) and exits 1. Never touches the network.
"""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._models import add_common, manager_from, split_ref

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "path",
        help="print the path of a ready model version (exit 1 with the reason otherwise)",
    )
    p.description = "Print the directory of a ready model version on stdout (the hub's default version, or the newest ready one offline, unless VERSION is named); exit 1 with the reason when it is not ready."
    p.epilog = 'Example: python app.py --model "$(accel path whisper-small)"'
    p.add_argument("model", metavar="MODEL[@VERSION]", help="the model (and version)")
    add_common(p, hub=False, json_flag=False)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    model, version = split_ref(args.model)
    mm = manager_from(args, existing=True)
    try:
        print(mm.get_model_path(model, version))
    finally:
        mm.close()
    return 0
