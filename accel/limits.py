"""The listener limits of ``serve`` and ``node`` as a value (no aiohttp here).

Apart from :mod:`accel.listener` so that building the CLI's parser, which shows these
defaults in ``serve --help`` and ``node --help``, does not import aiohttp into every
``accel`` process: ``accel get`` never serves, and aiohttp was ~9.5 MiB of its PSS.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """How long a request head may take and how many connections may be open at once."""

    header_timeout_s: float = 30.0
    max_connections: int = 10_000

    def __post_init__(self) -> None:
        if not self.header_timeout_s > 0:
            raise ValueError("header_timeout_s must be > 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
