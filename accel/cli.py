"""``accel`` command line: parses, calls the library, renders. Never holds logic.

Each subcommand lives in ``accel/_cli/<name>.py`` with ``register(subparsers)`` that adds
its parser and sets ``func`` to a handler returning an exit code. Expected failures
(:class:`~accel.errors.AccelError`) print one line (message and hint) on stderr without a
traceback: exit 2 for usage errors, 1 for any other failure.

:func:`main` is the CLI's one translation seam for what a library layer let through: an
``OSError`` becomes its :func:`~accel.errors.from_os_error` error (``permission_denied``,
``not_a_directory``, ...), anything else one ``[internal]`` line that says how to see the
traceback (``--debug`` or ``ACCEL_DEBUG=1``): a user never gets a traceback by default.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shutil
import socket
import sys
import textwrap
import traceback
from collections.abc import Sequence
from typing import Any

from accel import _cli
from accel.errors import AccelError, InternalError, UsageError, from_os_error

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """``accel``'s parser: usage errors as :class:`UsageError`; a subcommand's parser
    (``command`` set) fills every option no flag gave from the environment, then the
    config file, then its default (:mod:`accel._cli._settings`), the same way for all."""

    command: str | None = None
    known_commands: tuple[str, ...] = ()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.command is None:
            return super().parse_known_args(args, namespace)
        from accel._cli._settings import fill, prepare, restore

        saved = prepare(self)
        try:
            ns, extras = super().parse_known_args(args, namespace)
        except BaseException:
            restore(saved)
            raise
        fill(self, self.command, ns, saved)
        return ns, extras

    def error(self, message: str) -> None:  # type: ignore[override]
        # main() prints "accel: ": name the subcommand only, never "accel: accel: ..."
        where = self.prog.removeprefix("accel").strip()
        raise UsageError(
            f"{where}: {message}" if where else message, hint=f"see `{self.prog} --help`"
        )


_DESCRIPTION = (
    "accel: a fast, verified, resumable downloader (many connections per file) and\n"
    "a model manager that installs model versions from a hub. Every option: flag >\n"
    "environment > ~/.config/accel/config.toml > default (`accel config --help`)."
)

#: the commands as a person meets them, in groups (a command missing here: "other")
_GROUPS = {
    "models from a hub": ["search", "pull", "install", "status", "list", "path", "verify",
                          "update", "remove"],
    "one file": ["get"],
    "a node": ["node", "preseed", "locks", "logs"],
    "a hub": ["serve", "publish", "gc", "demo-store"],
    "settings and tools": ["config", "completion", "schema"],
}  # fmt: skip


def _command_list(sub: Any) -> str:
    """The ``commands:`` section of ``accel --help``: grouped, one line each."""
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    width = max(map(len, helps), default=8) + 2
    grouped = [name for names in _GROUPS.values() for name in names]
    groups = {**_GROUPS, "other": sorted(set(helps) - set(grouped))}
    columns = min(shutil.get_terminal_size().columns, 100) - 1
    out = ["commands:"]
    for title, names in groups.items():
        names = [n for n in names if n in helps]
        if not names:
            continue
        out.append(f"  {title}:")
        for name in names:
            out += textwrap.wrap(helps[name], columns, initial_indent=f"    {name:<{width}}",
                                 subsequent_indent=" " * (4 + width))  # fmt: skip
    return "\n".join(out)


_EXAMPLES = """examples:
  accel search                         what the hub offers
  accel pull whisper-small             install the default version, its path
  accel install m@1.0 --limit-rate 25M install at most 25 MiB/s
  accel status                         every version: state, bytes, errors
  accel get URL -x 8 -o file.bin       one file, 8 connections, resumable
  accel completion bash                shell completion script

`accel COMMAND --help`: each command, with its defaults and an example."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand module found in ``accel._cli``."""
    parser = _Parser(
        prog="accel",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from accel import __version__

    parser.add_argument("--version", action="version", version=f"accel {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=_env_debug(),
        help="print the traceback of a failure (also: ACCEL_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(_cli.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"accel._cli.{info.name}")
        module.register(sub)
    # argparse's list is alphabetical, its long names pushed onto lines of their own:
    # the top-level help lists the commands in groups instead
    parser.description = f"{_DESCRIPTION}\n\n{_command_list(sub)}"
    parser._positionals._group_actions.remove(sub)  # still parsed, and completed by shtab
    for name, p in sub.choices.items():
        if isinstance(p, _Parser):
            p.command = name
            p.known_commands = tuple(sub.choices)
    return parser


def _env_debug() -> bool:
    return os.environ.get("ACCEL_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


# OSErrors of the network: a library seam should have named the host; if one did not,
# that is a bug to report, not a file problem to describe with a path.
_NETWORK = (ConnectionError, TimeoutError, socket.gaierror, socket.herror)

#: the commands whose rerun resumes what an interrupted run fetched
_RESUMABLE = {"get", "install", "pull", "update", "preseed"}

_REPORT_HINT = "this is a bug in accel: rerun with --debug or ACCEL_DEBUG=1 to see the traceback, and report it"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``accel`` console script; returns the exit code."""
    debug = _env_debug()
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        debug = debug or bool(getattr(args, "debug", False))
        code: int = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone (EPIPE) is handled below
        return code
    except UsageError as exc:
        if "--json" in (sys.argv[1:] if argv is None else argv):
            # a program reading --json output gets the usage error in the same schema
            from accel._cli._models import emit_json

            emit_json({"event": "error", **exc.to_dict()})
        text = str(exc)
        command = getattr(args, "command", None)
        if command and not text.startswith(f"{command}:"):
            text = f"{command}: {text}"  # one form for every usage error: `accel: get: ...`
        print(f"accel: {text}", file=sys.stderr)
        return 2
    except AccelError as exc:
        return _fail(exc, debug)
    except KeyboardInterrupt:
        if getattr(args, "command", None) in _RESUMABLE:
            # as aria2c says it: what was fetched is not lost, and how to go on
            print("accel: interrupted; finished chunks are kept: rerun the same command "
                  "to resume", file=sys.stderr)  # fmt: skip
        else:
            print("accel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `accel list | head`: the reader left; say nothing, and let no flush at exit fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        if isinstance(exc, _NETWORK):
            return _internal(exc, debug)
        try:
            raise from_os_error(exc, action="access") from exc
        except AccelError as err:
            return _fail(err, debug)
    except Exception as exc:
        return _internal(exc, debug)


def _fail(exc: AccelError, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    print(f"accel: error [{exc.code}]: {exc}", file=sys.stderr)
    return 1


def _internal(exc: Exception, debug: bool) -> int:
    what = " ".join(str(exc).split()) or "(no message)"
    err = InternalError(f"{type(exc).__name__}: {what}", hint=_REPORT_HINT)
    err.__cause__ = exc
    return _fail(err, debug)


if __name__ == "__main__":
    sys.exit(main())
