"""Waiting for a state, never for a guessed time: a polled predicate with a deadline.

``wait_until(pred, what=..., timeout=30)`` (threads, subprocess tests) and ``await
until(pred, what=..., timeout=30)`` (async tests: the loop keeps running between polls)
return the first truthy value of ``pred()``; past the deadline they fail naming
``what`` was awaited, instead of hanging until pytest-timeout or, worse, asserting on a
state that a loaded machine had not reached yet after a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until", "wait_until"]

T = TypeVar("T")


def wait_until(
    pred: Callable[[], T], *, what: str, timeout: float = 30.0, interval: float = 0.02
) -> T:
    """Poll ``pred`` until it returns a truthy value (returned); AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        time.sleep(interval)
    return got


async def until(
    pred: Callable[[], T], *, what: str, timeout: float = 30.0, interval: float = 0.02
) -> T:
    """``wait_until`` for async tests: sleeps on the loop between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (got := pred()):
        if loop.time() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(interval)
    return got
