"""The priority queue of installs: which queued install gets the next free slot.

Owns :class:`PrioritySlots`, a semaphore whose waiters are served highest priority
first (then first come). A waiter's priority can change while it waits, which is how
``install(..., priority=N)`` on a queued model moves it forward. No I/O.
"""

from __future__ import annotations

import asyncio
import itertools

__all__ = ["PrioritySlots"]


class PrioritySlots:
    """``n`` slots, handed to waiters by (priority desc, arrival)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("need at least one slot")
        self.free = n
        self._waiters: dict[str, tuple[int, int, asyncio.Future[None]]] = {}
        self._seq = itertools.count()

    def waiting(self) -> list[str]:
        """Keys waiting for a slot, in the order they will be served."""
        return [k for k, _ in sorted(self._waiters.items(), key=lambda kv: (-kv[1][0], kv[1][1]))]

    def set_priority(self, key: str, priority: int) -> bool:
        """Change a waiter's priority; False if ``key`` is not waiting."""
        entry = self._waiters.get(key)
        if entry is None:
            return False
        self._waiters[key] = (priority, entry[1], entry[2])
        return True

    async def acquire(self, key: str, priority: int) -> None:
        """Wait for a slot; cancelling the wait leaves the queue consistent."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = (priority, next(self._seq), fut)
        try:
            await fut
        except asyncio.CancelledError:
            self._waiters.pop(key, None)
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled
            raise

    def release(self) -> None:
        """Give a slot back: to the best waiter, or to the pool."""
        while self._waiters:
            key = self.waiting()[0]
            _, _, fut = self._waiters.pop(key)
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1
