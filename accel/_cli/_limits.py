"""``--header-timeout`` and ``--max-connections``: the listener limits of ``serve`` and ``node``."""

from __future__ import annotations

import argparse
import math

from accel.errors import UsageError
from accel.limits import Limits

__all__ = ["add_limit_options", "limits_from"]

_DEFAULT = Limits()


def add_limit_options(p: argparse.ArgumentParser) -> None:
    """Add the two options with the defaults of :class:`accel.listener.Limits`."""
    p.add_argument(
        "--header-timeout",
        type=float,
        default=_DEFAULT.header_timeout_s,
        metavar="SECONDS",
        help="close a connection whose request head has not arrived within SECONDS "
        f"(also the idle keep-alive time; default {_DEFAULT.header_timeout_s:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=_DEFAULT.max_connections,
        metavar="N",
        help="open connections at most (per process); more wait in the kernel's backlog "
        f"(default {_DEFAULT.max_connections})",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    """The parsed options as :class:`Limits`, or a UsageError naming the bad one."""
    timeout = args.header_timeout
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--header-timeout {timeout:g} must be a number of seconds > 0")
    if args.max_connections < 1:
        raise UsageError(f"--max-connections {args.max_connections} must be >= 1")
    return Limits(header_timeout_s=timeout, max_connections=args.max_connections)
