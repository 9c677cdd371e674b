"""Fail a test whose asyncio tasks lost an exception.

An exception left in a task nobody awaits is only logged (``Task exception was never
retrieved``) when the task is garbage-collected, and whatever waited on that work hangs.
:func:`failing_on_lost_task_exceptions` wraps every event loop's exception handler for
its block (the test's own loop and those of sync wrappers' ``asyncio.run``), collects the
garbage at the end so such tasks are finalised, and raises if any was reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from typing import Any

__all__ = ["failing_on_lost_task_exceptions"]


@contextlib.contextmanager
def failing_on_lost_task_exceptions() -> Iterator[list[str]]:
    lost: list[str] = []
    original = asyncio.BaseEventLoop.call_exception_handler

    def handler(self: asyncio.BaseEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "never retrieved" in message:
            lost.append(f"{message}: {context.get('exception')!r}")
        original(self, context)

    asyncio.BaseEventLoop.call_exception_handler = handler  # type: ignore[method-assign]
    try:
        yield lost
        gc.collect()
    finally:
        asyncio.BaseEventLoop.call_exception_handler = original  # type: ignore[method-assign]
    assert not lost, f"exceptions left in tasks nobody awaited: {lost}"
