"""``accel config``: the settings in effect and where each one came from.

Precedence: flag > environment > config file > default. The files are
``$XDG_CONFIG_HOME/accel/config.toml`` (``~/.config/accel/config.toml``) and
``/etc/accel/config.toml``, TOML with the keys hub, models_dir, limit_rate, token_file.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from accel._cli._models import add_common, emit_json, settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "config",
        help="show the settings in effect (hub, models dir, ...) and where each came from",
        description="Print each setting with its value and source. Precedence: flag > "
        "environment ($ACCEL_HUB, $ACCEL_MODELS_DIR, $ACCEL_LIMIT_RATE, $ACCEL_TOKEN_FILE) "
        "> config file (~/.config/accel/config.toml, then /etc/accel/config.toml) > default. "
        'A config file: hub = "http://hub.lan:8600" and models_dir = "/srv/models", one a line.',
        epilog="Example: accel config --json",
    )
    add_common(p)
    p.add_argument("--limit-rate", metavar="RATE", help="as for install (25M = 25 MiB/s)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from accel.config import config_files

    got = settings(args)
    token = "set" if (args.token or os.environ.get("ACCEL_TOKEN")) else "unset"
    if args.json:
        emit_json(
            {
                "settings": {k: {"value": s.value, "source": s.source} for k, s in got.items()},
                "token": token,
                "files": [str(p) for p in config_files(os.environ)],
            }
        )
        return 0
    for key, s in got.items():
        value = s.value if s.value is not None else "-"
        print(f"{key:<11} {value:<40} ({s.source})")
    print(f"{'token':<11} {token:<40} (--token, $ACCEL_TOKEN or token_file; never printed)")
    files = config_files(os.environ)
    print("config files: " + ", ".join(f"{p}{'' if p.exists() else ' (none)'}" for p in files))
    return 0
