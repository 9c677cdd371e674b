"""What every download of one engine shares: connection slots, the retry policy, limits.

The :class:`~accel.fetch.engine.Engine` makes one :class:`Shared` and hands it to each
file's download, so a download needs nothing of the engine itself (no import of it):
the engine composes downloads, downloads never reach back up.

``ConnectionSlots`` is the connection budget ("auto" grows ``capacity``); a request
holds one slot from submit to end. ``RetryPolicy`` is an immutable value, as urllib3's
``Retry``: one place decides how long to wait and when to stop.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accel.fetch.pool import WorkerPool

__all__ = ["ConnectionSlots", "RetryPolicy", "Shared"]


class ConnectionSlots:
    """At most ``capacity`` requests at once across every download of an engine."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._freed = asyncio.Event()

    def try_acquire(self) -> bool:
        if self.used >= self.capacity:
            return False
        self.used += 1
        self.peak = max(self.peak, self.used)
        return True

    async def acquire(self) -> None:
        while not self.try_acquire():
            self._freed.clear()
            await self._freed.wait()

    def release(self) -> None:
        self.used -= 1
        self._freed.set()

    def free(self) -> int:
        return self.capacity - self.used

    def grow(self, capacity: int) -> None:
        """Set a new capacity and wake every waiter to try again."""
        self.capacity = capacity
        self._freed.set()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's ``Retry-After`` wins when longer."""

    max_attempts: int = 5
    base: float = 0.25
    cap: float = 15.0
    #: the longest ``Retry-After`` honoured (a server asking for a day is not waited on)
    retry_after_cap: float = 300.0

    def allows(self, attempt: int) -> bool:
        """May attempt number ``attempt`` (1-based) be followed by another?"""
        return attempt < self.max_attempts

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        expo = min(self.cap, self.base * (2 ** (attempt - 1)))
        delay = random.uniform(expo / 2, expo)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay


@dataclass(frozen=True)
class Shared:
    """The engine's parts a file's download uses."""

    pool: WorkerPool
    slots: ConnectionSlots
    retry: RetryPolicy
    stall_timeout: float = 30.0
    min_rate: float = 1024.0
    #: seconds between checkpoints of a running download (also every 8 MiB finished)
    checkpoint_s: float = 1.0
    #: folders this engine made or found (a version's files share a few): a ``.part``
    #: whose folder went away since is created again by its open (``FileDownload``)
    made_dirs: set[str] = field(default_factory=set)
    #: ``{folder: (when, free bytes)}``: one statvfs per folder and second, less what
    #: the downloads checked since have claimed (``FileDownload._check_space``)
    free_space: dict[str, tuple[float, int]] = field(default_factory=dict)
