"""The slow tail raced on the fastest source: first verified bytes win.

When nothing is pending and a connection is free, the running chunk that its source
would finish last (its own rate so far against the fastest source's) is fetched again
from the fastest source, from a block boundary ahead of where the slow request is.
The duplicate writes into a side file (``<name>.part.race``), never into the ``.part``:
two writers on the same bytes would let a lying or late loser overwrite the winner.

- The slow request ends first: the duplicate is cancelled (it only wrote the side file).
- The duplicate ends first, its blake3 blocks checked as they streamed: the slow
  request is trimmed at a block boundary ahead of it (the worker acknowledges a trim
  under the lock it takes bytes with, so it writes nothing past that point), and the
  bytes from there to the chunk's end are copied from the side file into the
  ``.part`` and recorded as done. A trim that comes too late (the slow request is
  nearly done) leaves the slow request to finish; the duplicate's bytes are dropped.

Only with block digests: without them nothing says which of two answers is right. The
choice (which chunk, from where) reads :mod:`~accel.fetch.sources`' measurements; this
module does the I/O of one race at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path

from accel.fetch.checkpoint import DoneChunk, xxh3_of_range
from accel.fetch.drive import ChunkDriver
from accel.fetch.plan import Chunk, ChunkState
from accel.fetch.pool import TaskHandle

__all__ = ["TailRace"]

MiB = 1024 * 1024
#: race only a request its source would end this many times later than the fastest
_SLOWER = 2.0
#: what a worker may have read past its last report: one read buffer, plus the bytes
#: of one progress interval (0.1 s) at the request's rate (accel.fetch.worker)
_READ_BUFFER = 256 * 1024
_REPORT_S = 0.1


@dataclasses.dataclass(eq=False)
class _Race:
    chunk: Chunk
    start: int
    source: int
    handle: TaskHandle | None = None
    #: "fetching" until the duplicate ends, then "claiming" (trim and copy)
    phase: str = "fetching"
    lost: bool = False


class TailRace(ChunkDriver):
    """The race of :mod:`accel.fetch.sources_race`, as a part of the download."""

    part: Path
    digests: tuple[str, ...]
    race: _Race | None = None

    @property
    def race_path(self) -> Path:
        return self.part.with_name(self.part.name + ".race")

    def _margin(self, chunk: Chunk, handle: TaskHandle, now: float) -> int:
        """A block boundary the slow request has surely not reached yet."""
        _, t0 = self.chunk_src.get(chunk.id, (0, now))
        done = handle.position - handle.task.start
        rate = done / max(1e-3, now - t0)
        ahead = handle.position + _READ_BUFFER + int(rate * _REPORT_S * 2) + 64 * 1024
        bs = self.block_size or 1
        return -(-ahead // bs) * bs

    def _maybe_race(self, tasks: set[asyncio.Task[None]]) -> bool:
        """Start a race for the slowest running chunk; True when one runs now."""
        if self.race is not None:
            return True
        if len(self.policy) == 1 or not self.digests or not self.ranged or self.plan is None:
            return False
        now = time.monotonic()
        best: tuple[float, Chunk, TaskHandle, int, int] | None = None
        for chunk in self.plan.active():
            h = self.handles.get(chunk.id)
            placed = self.chunk_src.get(chunk.id)
            if h is None or placed is None:
                continue
            src, t0 = placed
            fast = self.policy.fastest(now, exclude={src})
            if fast is None:
                continue
            left = chunk.end - h.position
            got = h.position - h.task.start
            elapsed = now - t0
            if elapsed < 0.2:
                continue  # too early to tell how fast this request is
            own = got / elapsed if got > 0 else 0.0
            t_fast = self.policy.seconds_for(fast, left)
            if t_fast is None:
                continue
            t_slow = left / own if own > 0 else float("inf")
            if t_slow <= _SLOWER * t_fast:
                continue
            if best is None or t_slow - t_fast > best[0]:
                best = (t_slow - t_fast, chunk, h, src, fast)
        if best is None:
            return False
        _, chunk, h, _, fast = best
        start = self._margin(chunk, h, now)
        if start >= chunk.end or not self.shared.slots.try_acquire():
            return False
        self.race = _Race(chunk, start, fast)
        self.raced = chunk.id
        tasks.add(asyncio.ensure_future(self._run_race(self.race)))
        return True

    def _race_lost(self, chunk: Chunk) -> None:
        """The raced chunk's own request ended (well or not): the duplicate is moot."""
        race = self.race
        if race is None or race.chunk is not chunk or race.phase != "fetching":
            return
        race.lost = True
        if race.handle is not None:
            self.shared.pool.cancel(race.handle)

    async def _run_race(self, race: _Race) -> None:
        pool = self.shared.pool
        chunk = race.chunk
        self.policy = self.policy.started(race.source)
        t0 = time.monotonic()
        claimed = False
        try:
            fd = await asyncio.to_thread(_side_file, self.race_path, self.total or 0)
            os.close(fd)
            task = dataclasses.replace(
                self._task(race.start, chunk.end, race.source), path=str(self.race_path)
            )
            race.handle = handle = pool.submit(task)
            handle.on_progress = self._on_progress
            try:
                outcome = await asyncio.shield(handle.done)
            except asyncio.CancelledError:
                pool.cancel(handle)
                raise
            self.received += max(0, (outcome.end or handle.position) - handle.position)
            nbytes = max(0, (outcome.end or handle.position) - race.start)
            if race.lost or outcome.error is not None:
                if outcome.error is not None and not race.lost:
                    self.policy = self.policy.failed(race.source, nbytes, time.monotonic())
                else:
                    self.policy = self.policy.ended(race.source, nbytes, kept=False)
                return
            race.phase = "claiming"
            at = await self._claim(race)
            if at is None:
                self.policy = self.policy.ended(race.source, nbytes, kept=False)
                return
            claimed = True
            self.policy = self.policy.finished(race.source, nbytes, time.monotonic() - t0)
            self._emit(
                "progress",
                f"bytes {at}-{chunk.end - 1}: the race on {self.policy[race.source].url} "
                "won (first verified bytes)",
            )
        finally:
            self.shared.slots.release()
            self.race = None
            self.raced = None
            if not claimed:
                with contextlib.suppress(OSError):
                    self.race_path.unlink()

    async def _claim(self, race: _Race) -> int | None:
        """Trim the slow request ahead of itself and copy the race's bytes after that
        point into the ``.part``; the point, or None when the trim came too late."""
        chunk = race.chunk
        h = self.handles.get(chunk.id)
        if h is None or chunk.state is not ChunkState.ACTIVE or self.plan is None:
            return None
        at = max(race.start, self._margin(chunk, h, time.monotonic()))
        if at >= chunk.end:
            return None
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[int | None] = loop.create_future()
        previous = h.on_trim

        def on_trim(new_end: int | None) -> None:
            if not acked.done():
                acked.set_result(new_end)

        h.on_trim = on_trim
        self.splitting = True
        self.shared.pool.trim(h, at)
        try:
            new_end = await asyncio.wait_for(acked, timeout=10.0)
        except TimeoutError:
            new_end = None
        finally:
            h.on_trim = previous
            self.splitting = False
        if new_end is None:
            return None
        tail = self.plan.split(chunk, new_end)
        taken = self.plan.take_range(tail.start, tail.end)
        assert taken is tail
        try:
            xxh3 = await asyncio.to_thread(
                _copy_range, self.race_path, self.part, tail.start, tail.end
            )
        except BaseException:
            self.plan.fail(tail)
            raise
        self.plan.complete(tail)
        self.recorder.record(DoneChunk(start=tail.start, end=tail.end, xxh3=xxh3))
        assert self.hasher is not None
        self.hasher.wake.set()
        return new_end


def _side_file(path: Path, size: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, size)
    return fd


def _copy_range(src: Path, dst: Path, start: int, end: int) -> str:
    """Copy ``[start, end)`` from ``src`` into ``dst`` at the same offsets; the xxh3 of
    the copied bytes as ``dst`` holds them (the checkpoint's record)."""
    fin = os.open(src, os.O_RDONLY)
    try:
        fout = os.open(dst, os.O_WRONLY)
        try:
            pos = start
            while pos < end:
                data = os.pread(fin, min(4 * MiB, end - pos), pos)
                if not data:
                    raise OSError(f"{src} ends before byte {end}")
                os.pwrite(fout, data, pos)
                pos += len(data)
        finally:
            os.close(fout)
        fd = os.open(dst, os.O_RDONLY)
        try:
            return xxh3_of_range(fd, start, end)
        finally:
            os.close(fd)
    finally:
        os.close(fin)
