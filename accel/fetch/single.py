"""One-request downloads: a whole small file, or a stream into a special destination.

:func:`fetch_once` sends one task through the engine's pool under one connection slot
and returns its outcome; a cancelled caller cancels the task. :func:`special_target`
tells whether a destination exists and is not a regular file (a character or block
device, a FIFO): such a target is written in order from one stream, never renamed over
(``-o /dev/null --sha256 H`` is a verified speed test, and replacing a device node
would break it for the whole machine). A socket cannot be written: a clear error.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path

from accel.errors import DownloadError
from accel.fetch.messages import Head, Task
from accel.fetch.pool import Outcome, TaskHandle
from accel.fetch.slots import Shared

__all__ = ["fetch_once", "special_target"]


def special_target(dest: Path) -> bool:
    """True when ``dest`` exists and must be streamed into (device, FIFO).

    A directory or a socket raises: neither can hold the file.
    """
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        return False
    except OSError:
        return False  # the open of .part reports it, with the path
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return False
    if stat.S_ISDIR(mode):
        raise DownloadError(
            f"{dest} is a directory",
            path=str(dest),
            hint="name a file inside it (-o DIR/NAME), or pass -o DIR to use the URL's name",
        )
    if stat.S_ISSOCK(mode):
        raise DownloadError(
            f"{dest} is a socket: a download cannot be written into it",
            path=str(dest),
            hint="choose a regular file, a FIFO or a device as the destination",
        )
    return True


async def fetch_once(
    shared: Shared,
    task: Task,
    *,
    on_progress: Callable[[int, int], None],
    handles: dict[int, TaskHandle],
    on_head: Callable[[Head], None] | None = None,
    on_cancel: Callable[[TaskHandle], None] = lambda h: None,
) -> tuple[Outcome, TaskHandle]:
    """Run ``task`` once (no retry); the handle is in ``handles[-1]`` while it runs."""
    pool, slots = shared.pool, shared.slots
    await slots.acquire()
    try:
        handle = pool.submit(task)
    except BaseException:
        slots.release()
        raise
    handle.on_progress = on_progress
    handle.on_head = on_head
    handles[-1] = handle
    try:
        outcome = await asyncio.shield(handle.done)
    except asyncio.CancelledError:
        on_cancel(handle)  # before the cancel: the handle still says how far it got
        pool.cancel(handle)
        raise
    finally:
        handles.pop(-1, None)
        slots.release()
    return outcome, handle
