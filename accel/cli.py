"""``accel`` command line: parses, calls the library, renders. Never holds logic.

Each subcommand lives in ``accel/_cli/<name>.py`` with ``register(subparsers)`` that adds
its parser and sets ``func`` to a handler returning an exit code. Expected failures
(:class:`~accel.errors.AccelError`) print one line (message and hint) on stderr without a
traceback: exit 2 for usage errors, 1 for any other failure.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from accel import _cli
from accel.errors import AccelError, UsageError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand module found in ``accel._cli``."""
    parser = _Parser(prog="accel", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(_cli.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"accel._cli.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``accel`` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"accel: {exc}", file=sys.stderr)
        return 2
    except AccelError as exc:
        print(f"accel: error [{exc.code}]: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("accel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
