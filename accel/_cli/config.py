"""``accel config``: the settings in effect and where each one came from.

Precedence, the same for every command and option: flag > environment > config file >
built-in default. The files are ``$XDG_CONFIG_HOME/accel/config.toml``
(``~/.config/accel/config.toml``), then ``/etc/accel/config.toml``: TOML with the shared
keys hub, models_dir, limit_rate, token_file at the top, and a table per command for its
own options (``[serve]`` ``port = 8600``). ``accel config COMMAND`` shows one command's.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from accel._cli._models import add_common, emit_json, settings
from accel.errors import UsageError

__all__ = ["register"]

_EPILOG = """\
A config file (~/.config/accel/config.toml):

  hub = "http://hub.lan:8600"        # shared keys: every command with the option
  models_dir = "/srv/models"
  limit_rate = "50M"                 # 50 MiB/s
  token_file = "~/.config/accel/token"

  [serve]                            # a command's own options, as its long flags
  root = "/srv/hub"
  port = 8600
  max-connections = 2048

  [node]
  listen = "0.0.0.0:8700"
  preseed-top = 3

Precedence for every option of every command: the flag, then its environment variable
($ACCEL_HUB, $ACCEL_MODELS_DIR, $ACCEL_LIMIT_RATE, $ACCEL_TOKEN, $ACCEL_TOKEN_FILE,
$ACCEL_SCHEDULER_TOKEN, $HF_ENDPOINT; `accel serve` reads $ACCEL_HUB_TOKEN), then the
first file that sets it ([COMMAND] table, then the top-level key), then the default.

Examples:
  accel config                 the shared settings and their sources
  accel config serve           every option of `accel serve`, with its source
  accel config --json"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "config",
        help="show the settings in effect (hub, models dir, ...) and where each came from",
        description="Print each setting with its value and source (a flag, an environment "
        "variable, a config file and its table, or the default).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "for_command",
        nargs="?",
        metavar="COMMAND",
        help="show the options of this command instead (e.g. serve, node, install)",
    )
    add_common(p)
    p.add_argument("--limit-rate", metavar="RATE", help="as for install (25M = 25 MiB/s)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from accel.config import config_files

    if args.for_command:
        return _command(args)
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
    _print_files()
    return 0


def _print_files() -> None:
    from accel.config import config_files

    files = config_files(os.environ)
    print("config files: " + ", ".join(f"{p}{'' if p.exists() else ' (none)'}" for p in files))


def _command(args: argparse.Namespace) -> int:
    from accel._cli._settings import resolve_options
    from accel.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    name = args.for_command
    if name not in sub.choices:
        raise UsageError(
            f"config: there is no command {name!r}",
            hint="the commands: " + ", ".join(sorted(sub.choices)),
        )
    got = resolve_options(sub.choices[name], name, os.environ)
    secret = {"token", "scheduler_token"}
    shown = {
        dest: ("set" if s.value and dest in secret else s.value, s.source)
        for dest, s in got.items()
        if dest != "json"
    }
    if args.json:
        emit_json(
            {
                "command": name,
                "settings": {d: {"value": v, "source": src} for d, (v, src) in shown.items()},
            }
        )
        return 0
    width = max((len(d) for d in shown), default=10) + 1
    for dest, (value, source) in shown.items():
        print(f"{dest.replace('_', '-'):<{width}} {value if value is not None else '-':<32} "
              f"({source})")  # fmt: skip
    _print_files()
    return 0
