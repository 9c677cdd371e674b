"""The first request of a file: learn its size and validators, and where to start.

The probe is an ordinary chunk request flagged ``probe``: its worker reports the
answer's head (:class:`~accel.fetch.messages.HeadSeen`) and waits for the supervisor's
decision before writing, so the first chunk costs no extra round trip. Retried like any
chunk. Knows nothing of plans or checkpoints beyond where a resume starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from accel.fetch.checkpoint import Checkpoint
from accel.fetch.messages import Head, Task
from accel.fetch.pool import Outcome, TaskHandle
from accel.fetch.recorder import block_pieces
from accel.fetch.slots import Shared

__all__ = ["probe", "probe_length", "probe_start"]


def probe_start(cp: Checkpoint | None, expected_size: int | None, block_size: int) -> int:
    """Where the first request starts: the first byte a checkpoint lacks, so a resumed
    download does not fetch its first chunk again only to learn the size."""
    if cp is None or (expected_size is not None and cp.size != expected_size):
        return 0
    pos = 0
    for c in sorted(cp.chunks, key=lambda c: c.start):
        if c.start != pos:
            break
        pos = c.end
    align = block_size or 1
    pos -= pos % align
    return pos if pos < cp.size else 0


def probe_length(cp: Checkpoint | None, start: int, length: int, block_size: int = 0) -> int:
    """A resumed probe asks only for the gap at ``start``: the server keeps sending while
    the probe's worker waits for the supervisor's decision, and whatever it sent past
    the gap (up to the socket buffers' megabytes) would be thrown away. Checkpoints
    record running chunks' prefixes, so such gaps are often small.

    With block digests the gap ends where the next record's *kept* bytes begin
    (:func:`~accel.fetch.recorder.block_pieces`): a record starting inside a block
    (the continuation of a kept head) keeps nothing of that block, and the probe, which
    starts at the head's end, must fetch the block's rest. Measured from the raw record
    start, a head ``[0, h)`` and its continuation ``[h, x)`` gave the probe the empty
    range ``[h, h)``: HTTP 416, and the resume failed as "the remote file changed"."""
    if cp is None:
        return length
    # Up to the plan's first chunk end too: the plan cuts at multiples of the chunk size.
    length = min(length, length - start % length)
    if block_size:
        after = [
            s
            for c in cp.chunks
            for s, _ in block_pieces(c.start, c.end, block_size, cp.size)
            if s > start
        ]
    else:
        after = [c.start for c in cp.chunks if c.start > start]
    return min(length, min(after) - start) if after else length


async def probe(
    shared: Shared,
    task: Task,
    *,
    on_progress: Callable[[int, int], None],
    on_retry: Callable[[str], None],
) -> tuple[Head, TaskHandle]:
    """Send ``task`` (a probe) until a head comes back; the slot stays held on success.

    A failure no retry can fix (or the last allowed attempt's) is raised as it is.
    """
    attempt = 0
    while True:
        attempt += 1
        await shared.slots.acquire()
        handle = shared.pool.submit(task)
        head_fut: asyncio.Future[Head] = asyncio.get_running_loop().create_future()
        handle.on_head = _setter(head_fut)
        handle.on_progress = on_progress
        try:
            head = await _first(head_fut, handle.done)
        except BaseException:
            shared.pool.cancel(handle)
            shared.slots.release()
            raise
        if head is not None:
            return head, handle
        shared.slots.release()
        outcome = handle.done.result()
        assert outcome.error is not None
        if not outcome.retryable or not shared.retry.allows(attempt):
            raise outcome.error
        delay = shared.retry.delay(attempt, outcome.retry_after)
        on_retry(f"first request: {outcome.error.message}; retry in {delay:.1f} s")
        await asyncio.sleep(delay)


def _setter(fut: asyncio.Future[Head]) -> Callable[[Head], None]:
    def set_head(head: Head) -> None:
        if not fut.done():
            fut.set_result(head)

    return set_head


async def _first(head: asyncio.Future[Head], done: asyncio.Future[Outcome]) -> Head | None:
    """The probe's head, or None when the probe ended (with an error) before one."""
    waiters: set[asyncio.Future[object]] = {head, done}  # type: ignore[arg-type]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if head.done():
        return head.result()
    return None
