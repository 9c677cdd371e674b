"""Driving a planned download: chunks to connections, retries, splits, completion.

:class:`ChunkDriver` is the part of :class:`~accel.fetch.supervisor.FileDownload` that
runs the chunk plan once the probe has answered: it hands pending chunks to free
connection slots (sized by the connections there are now), retries a failed chunk with
the engine's :class:`~accel.fetch.slots.RetryPolicy`, sends a request back to the
user's URL when a redirect target refuses (an expired signed URL), halves the chunk
with the most bytes left when connections go idle near the end, and records each
finished chunk. Which bytes are missing is :mod:`~accel.fetch.plan`'s (pure); this
module decides who fetches them, as aria2 keeps SegmentMan apart from its commands.
The download's state and its other steps (task building, events, checkpoints) belong
to the supervisor; they are declared here so mypy checks both sides.
"""

from __future__ import annotations

import abc
import asyncio

from accel.errors import DownloadError, HTTPStatusError
from accel.fetch.checkpoint import DoneChunk
from accel.fetch.finish import PrefixHasher
from accel.fetch.messages import Task
from accel.fetch.plan import Chunk, ChunkPlan
from accel.fetch.pool import Outcome, TaskHandle
from accel.fetch.recorder import ChunkRecorder
from accel.fetch.slots import Shared
from accel.fetch.types import EventKind

__all__ = ["ChunkDriver"]

MiB = 1024 * 1024
#: answers from a redirect target that send the next request back to the original URL
_TARGET_GONE = frozenset({401, 403, 404, 410})


class ChunkDriver(abc.ABC):
    """Runs :attr:`plan` to the end through :attr:`shared` (a base of FileDownload)."""

    shared: Shared
    url: str
    total: int | None
    ranged: bool
    chunk_size: int | None
    block_size: int
    plan: ChunkPlan | None
    recorder: ChunkRecorder
    hasher: PrefixHasher | None
    handles: dict[int, TaskHandle]
    received: int
    retries: int
    splitting: bool
    resolved: str | None
    _refusals: int

    @abc.abstractmethod
    def _task(self, start: int, end: int | None) -> Task: ...

    @abc.abstractmethod
    def _emit(self, kind: EventKind, message: str = "") -> None: ...

    @abc.abstractmethod
    def _tick(self) -> None: ...

    @abc.abstractmethod
    def _maybe_checkpoint(self) -> None: ...

    @abc.abstractmethod
    def _keep_written_prefixes(self) -> None: ...

    @abc.abstractmethod
    def _count_retry(self, message: str) -> None: ...

    @abc.abstractmethod
    def _auto_chunk_size(self) -> int: ...

    @abc.abstractmethod
    def _on_progress(self, old: int, new: int) -> None: ...

    async def _drive(self, tasks: set[asyncio.Task[None]]) -> None:
        plan = self.plan
        slots = self.shared.slots
        assert plan is not None
        try:
            while not plan.finished:
                if self.recorder.error is not None:
                    raise self.recorder.error
                # Sized by the connections there are now: when the tuner adds some,
                # later chunks get shorter, and what all of them hold unfinished
                # stays near 64 MiB (a kill -9 loses no more).
                limit = None if self.chunk_size or not self.ranged else self._auto_chunk_size()
                while plan.pending_count and slots.try_acquire():
                    chunk = plan.take(limit)
                    if chunk is None:
                        slots.release()
                        break
                    tasks.add(asyncio.ensure_future(self._run_chunk(chunk, None)))
                if not plan.pending_count and slots.free() > 0:
                    self._maybe_split()
                if not tasks:
                    await asyncio.sleep(0.05)
                    continue
                done, _ = await asyncio.wait(
                    tasks, timeout=0.1, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    tasks.discard(t)
                    t.result()
                self._tick()
                self._maybe_checkpoint()
        finally:
            # Before the cancels below: each chunk's task drops its handle as it ends,
            # and with it the position its worker reported (the bytes an interrupt keeps).
            self._keep_written_prefixes()
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_chunk(self, chunk: Chunk, handle: TaskHandle | None) -> None:
        """Fetch one chunk once; on a retryable failure, back off and give it back."""
        pool, slots, retry = self.shared.pool, self.shared.slots, self.shared.retry
        assert self.plan is not None
        if handle is None:
            try:
                handle = pool.submit(self._task(chunk.start, chunk.end))
            except BaseException:
                slots.release()
                raise
        handle.on_progress = self._on_progress
        handle.on_trim = lambda new_end: self._on_trim(chunk, new_end)
        self.handles[chunk.id] = handle
        try:
            outcome = await asyncio.shield(handle.done)
        except asyncio.CancelledError:
            pool.cancel(handle)
            raise
        finally:
            self.handles.pop(chunk.id, None)
            slots.release()
        self.received += max(0, (outcome.end or handle.position) - handle.position)
        if outcome.url is not None:
            self.resolved = outcome.url  # the original URL was asked again: a new target
        if outcome.error is None:
            self._refusals = 0  # the budget is for refusals in a row: signatures expire
            self._complete(chunk, outcome, handle.task.start)
            return
        if self._target_refused(handle.task, outcome):
            # An expired signed URL (or a mirror that lost the file): the URL the user
            # gave decides again where the bytes are; finished chunks are kept.
            self._count_retry(
                f"bytes {chunk.start}-{chunk.end - 1}: {outcome.error}; resolving the URL again"
            )
            self.plan.fail(chunk)
            return
        if not outcome.retryable or not retry.allows(chunk.attempts):
            raise outcome.error
        self.retries += 1
        delay = retry.delay(chunk.attempts, outcome.retry_after)
        self._emit(
            "chunk_retry",
            f"bytes {chunk.start}-{chunk.end - 1}: {outcome.error.message}; "
            f"retry {chunk.attempts} in {delay:.1f} s",
        )
        await asyncio.sleep(delay)
        self.plan.fail(chunk)

    def _target_refused(self, task: Task, outcome: Outcome) -> bool:
        """A redirect target that now refuses (401/403/404/410) while the URL it came
        from may still answer: worth another resolution, within the attempt budget
        (refusals in a row of the current target; one of a target already dropped is
        free, since chunks running at once all meet the same expiry)."""
        err = outcome.error
        if not (
            isinstance(err, HTTPStatusError)
            and err.facts.get("status") in _TARGET_GONE
            and task.url != self.url
        ):
            return False
        if task.url != self.resolved:
            return True
        if not self.shared.retry.allows(self._refusals + 1):
            return False
        self._refusals += 1
        self.resolved = None
        return True

    def _complete(self, chunk: Chunk, outcome: Outcome, task_start: int) -> None:
        assert self.plan is not None
        if outcome.end != chunk.end:
            raise DownloadError(
                f"{self.url}: a worker finished bytes {chunk.start}-{outcome.end}, "
                f"expected up to {chunk.end}"
            )
        assert self.hasher is not None
        self.plan.complete(chunk)
        # A task that began past an unfinished block's kept bytes hashed only its own.
        self.recorder.record(DoneChunk(start=task_start, end=chunk.end, xxh3=outcome.xxh3))
        if outcome.sha256 is not None and chunk.start == 0 and chunk.end == self.total:
            # One task streamed the whole file and hashed it on the way: nothing to read
            # back. (The hash loop has hashed nothing yet: no prefix was done before.)
            self.hasher.adopt(outcome.sha256)
        self.hasher.wake.set()

    def _on_trim(self, chunk: Chunk, new_end: int | None) -> None:
        # Runs inside the message dispatch, before any later "done" of the same task.
        self.splitting = False
        if new_end is not None and self.plan is not None:
            self.plan.split(chunk, new_end)

    def _maybe_split(self) -> None:
        """Halve the chunk with the most bytes left, so an idle connection can help."""
        if self.splitting or self.plan is None or not self.ranged:
            return
        best: tuple[int, Chunk, TaskHandle] | None = None
        for chunk in self.plan.active():
            h = self.handles.get(chunk.id)
            if h is None:
                continue
            left = chunk.end - h.position
            if best is None or left > best[0]:
                best = (left, chunk, h)
        if best is None:
            return
        _, chunk, h = best
        at = self.plan.split_point(chunk, h.position, max(MiB, self.block_size))
        if at is None:
            return
        self.splitting = True
        self.shared.pool.trim(h, at)
