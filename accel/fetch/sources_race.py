"""The slow tail raced on the fastest source: first verified bytes win.

When nothing is pending and connections are free, each running chunk that its source
would finish much later than another source would fetch it again (its own rate so far
against that source's, for the bytes the duplicate would fetch) is fetched again from
the fastest source with a free connection, from the block boundary the slow request
is in: the slowest first, as many races at once as there are free connections (a
tail of starved connections ends together, not one race after another). The
duplicates write into a side file (``<name>.part.race``, each race its own chunk's
bytes of it), never into the ``.part``: two writers on the same bytes would let a
lying or late loser overwrite the winner.

- The slow request ends first: the duplicate is cancelled (it only wrote the side file).
- The duplicate ends first, its blake3 blocks checked as they streamed: the slow
  request is trimmed a little ahead of where it is (the worker acknowledges a trim
  under the lock it takes bytes with, so it takes nothing past that point) and its
  end awaited (a worker reports a request's end after its last write); only then are
  the duplicate's bytes copied from the side file over the chunk's rest, and the chunk
  recorded as done. The slow request's last, cut block fails its digest by design:
  that is no verdict on its source. A trim that comes too late (the slow request is
  nearly done) leaves it to finish; the duplicate's bytes are dropped.

Only with block digests: without them nothing says which of two answers is right. The
choice (which chunk, from where) reads :mod:`~accel.fetch.sources`' measurements; this
module does the I/O of the races.
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
#: with peers, a race at the hub only for a request this many times later
_SLOWER_AT_HUB = 4.0
#: races at once while chunks are still pending (nothing pending: one per free slot)
_EARLY_RACES = 2
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
    #: where the slow request was trimmed to stop (acknowledged by its worker)
    stop_at: int | None = None
    #: set when the trimmed slow request has ended (all its writes are done)
    stopped: asyncio.Future[None] | None = None


class TailRace(ChunkDriver):
    """The race of :mod:`accel.fetch.sources_race`, as a part of the download."""

    part: Path
    digests: tuple[str, ...]
    #: the download's received bytes per second (the supervisor's EWMA)
    speed: float
    #: the races running, by the id of the chunk each is for
    races: dict[int, _Race]

    @property
    def race_path(self) -> Path:
        return self.part.with_name(self.part.name + ".race")

    def _ahead(self, chunk: Chunk, handle: TaskHandle, now: float) -> int:
        """A byte the slow request has surely not reached yet (its worker may be past
        its last report by a read buffer and a report interval's bytes)."""
        _, t0 = self.chunk_src.get(chunk.id, (0, now))
        done = handle.position - handle.task.start
        rate = done / max(1e-3, now - t0)
        return handle.position + _READ_BUFFER + int(rate * _REPORT_S * 2) + 64 * 1024

    def _race_stopped(self, chunk: Chunk) -> bool:
        """The chunk's own request ended because a race that won trimmed it: True (the
        race finishes the chunk; the request's cut last block is no verdict)."""
        race = self.races.get(chunk.id)
        if race is None or race.chunk is not chunk or race.stop_at is None:
            return False
        if race.stopped is not None and not race.stopped.done():
            race.stopped.set_result(None)
        return True

    def _maybe_race(self, tasks: set[asyncio.Task[None]], early: bool = False) -> bool:
        """Start races for the slowest running chunks, one per free connection; True
        when a race runs now.

        ``early``: chunks are still pending; race only a chunk that would still be
        running after everything else is done (its source's time for what it has
        left, against the pending bytes at the download's speed plus the fastest
        source's time for it): the duplicate then costs nothing the tail would not;
        or (without peers) the first unfinished chunk, the SHA256 pass's front: every
        byte after it waits for it, and a request starved from its first second (a
        mirror's total shared by more connections than it carries) left the whole
        file to hash after the last byte.
        """
        # While chunks are pending, few races at once: free connections are for them.
        most = _EARLY_RACES if early else len(self.races) + self.shared.slots.free()
        while len(self.races) < most and self._start_race(tasks, early):
            pass
        return bool(self.races)

    def _start_race(self, tasks: set[asyncio.Task[None]], early: bool) -> bool:
        """Start the race that gains the most, if any; True when one started."""
        if len(self.policy) == 1 or not self.digests or not self.ranged or self.plan is None:
            return False
        now = time.monotonic()
        bs = self.block_size or 1
        best: tuple[tuple[bool, float], Chunk, TaskHandle, int, int] | None = None
        running = self.plan.active()
        # the SHA256 pass's front: the first unfinished chunk (peers: no such order)
        front = -1 if self.policy.partial else min((c.start for c in running), default=-1)
        for chunk in running:
            h = self.handles.get(chunk.id)
            placed = self.chunk_src.get(chunk.id)
            if h is None or placed is None or chunk.id in self.races:
                continue
            src, t0 = placed
            blocks = (chunk.start // bs, -(-chunk.end // bs))
            # With peers, a race at the hub is hub egress twice for the same bytes: only
            # for the very tail (nothing pending) and a request four times too slow.
            hub_too = not self.policy.partial or not early
            fast = self.policy.fastest(
                now, exclude={src} | (set() if hub_too else {self._last_resort()}), blocks=blocks
            )
            if fast is None:
                continue
            left = chunk.end - h.position
            got = h.position - h.task.start
            elapsed = now - t0
            if elapsed < 0.2:
                continue  # too early to tell how fast this request is
            own = got / elapsed if got > 0 else 0.0
            # the duplicate fetches from the block the slow request is in
            t_fast = self.policy.seconds_for(fast, chunk.end - _race_start(chunk, h, bs))
            if t_fast is None:
                continue
            t_slow = left / own if own > 0 else float("inf")
            slower = _SLOWER
            if self.policy.partial and self.policy[fast].last_resort:
                slower = _SLOWER_AT_HUB
            if t_slow <= slower * t_fast:
                continue
            first = chunk.start == front
            if early and not first and t_slow <= self._time_left() + t_fast:
                continue
            gain = (first, t_slow - t_fast)  # the front first, then the most time saved
            if best is None or gain > best[0]:
                best = (gain, chunk, h, src, fast)
        if best is None:
            return False
        _, chunk, h, _, fast = best
        if h.task.start != chunk.start or not self.shared.slots.try_acquire():
            return False
        if not self.races:
            # the side file, for the races from now until the last of them ends (each
            # writes only its own chunk's bytes of it): a few syscalls, a sparse file
            _side_file(self.race_path, self.total or 0)
        race = self.races[chunk.id] = _Race(chunk, _race_start(chunk, h, bs), fast)
        # Counted now, not when the task first runs: the next pick must see it.
        self.policy = self.policy.started(fast)
        tasks.add(asyncio.ensure_future(self._run_race(race)))
        return True

    def _last_resort(self) -> int:
        return next(i for i, s in enumerate(self.policy.sources) if s.last_resort)

    def _time_left(self) -> float:
        """Seconds the pending chunks need at the download's current speed."""
        assert self.plan is not None
        pending = self.plan.size - self.plan.done_bytes
        pending -= sum(c.end - c.start for c in self.plan.active())
        return pending / self.speed if self.speed > 0 else float("inf")

    def _race_lost(self, chunk: Chunk) -> None:
        """The raced chunk's own request ended (well or not): the duplicate is moot."""
        race = self.races.get(chunk.id)
        if race is None or race.chunk is not chunk or race.phase != "fetching":
            return
        race.lost = True
        if race.handle is not None:
            self.shared.pool.cancel(race.handle)

    async def _run_race(self, race: _Race) -> None:
        pool = self.shared.pool
        chunk = race.chunk
        t0 = time.monotonic()
        try:
            task = dataclasses.replace(
                self._task(race.start, chunk.end, race.source), path=str(self.race_path)
            )
            race.handle = handle = pool.submit(task)
            handle.on_progress = self._on_progress
            try:
                outcome = await asyncio.shield(handle.done)
            except asyncio.CancelledError:  # the file is done (or stopped): no verdict
                pool.cancel(handle)
                self.policy = self.policy.ended(race.source, handle.position - race.start)
                raise
            self.received += max(0, (outcome.end or handle.position) - handle.position)
            nbytes = max(0, (outcome.end or handle.position) - race.start)
            if race.lost or outcome.error is not None:
                link = self.links[race.source]
                if race.lost or self._target_refused(handle.task, outcome, link):
                    # lost, or an expired signed URL: the source's URL resolves anew
                    self.policy = self.policy.ended(race.source, nbytes, kept=False)
                else:
                    self.policy = self.policy.failed(race.source, nbytes, time.monotonic())
                return
            race.phase = "claiming"
            at = await self._claim(race)
            if at is None:
                self.policy = self.policy.ended(race.source, nbytes, kept=False)
                return
            self.policy = self.policy.finished(race.source, nbytes, time.monotonic() - t0)
            self._emit(
                "progress",
                f"bytes {at}-{chunk.end - 1}: the race on {self.policy[race.source].url} "
                "won (first verified bytes)",
            )
        finally:
            self.shared.slots.release()
            self.races.pop(chunk.id, None)
            if not self.races:  # the last race: its bytes are copied in, or dropped
                with contextlib.suppress(OSError):
                    self.race_path.unlink()

    async def _claim(self, race: _Race) -> int | None:
        """Stop the slow request a little ahead of itself, wait for its end, then copy
        the race's bytes over the chunk's rest; where they start, or None when the
        trim came too late (the slow request is nearly done: it finishes)."""
        chunk = race.chunk
        h = self.handles.get(chunk.id)
        if h is None or chunk.state is not ChunkState.ACTIVE or self.plan is None:
            return None
        at = self._ahead(chunk, h, time.monotonic())
        if at >= chunk.end:
            return None
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[int | None] = loop.create_future()
        race.stopped = loop.create_future()
        previous = h.on_trim

        def on_trim(new_end: int | None) -> None:
            # In the message dispatch, before the request's own end is dispatched.
            if new_end is not None:
                race.stop_at = new_end
            if not acked.done():
                acked.set_result(new_end)

        h.on_trim = on_trim
        self.shared.pool.trim(h, at)
        try:
            new_end = await acked
        finally:
            h.on_trim = previous
        if new_end is None:
            return None
        await race.stopped  # the slow request's last write is done
        try:
            xxh3 = await asyncio.to_thread(
                _copy_range, self.race_path, self.part, race.start, chunk.end
            )
            head = (
                await asyncio.to_thread(_xxh3_of, self.part, chunk.start, race.start)
                if race.start > chunk.start
                else None
            )
        except BaseException:
            self.plan.fail(chunk)
            raise
        self.plan.complete(chunk)
        if head is not None:
            self.recorder.record(DoneChunk(start=chunk.start, end=race.start, xxh3=head))
        self.recorder.record(DoneChunk(start=race.start, end=chunk.end, xxh3=xxh3))
        assert self.hasher is not None
        self.hasher.wake.set()
        return race.start


def _xxh3_of(path: Path, start: int, end: int) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return xxh3_of_range(fd, start, end)
    finally:
        os.close(fd)


def _race_start(chunk: Chunk, h: TaskHandle, block: int) -> int:
    """Where a duplicate of ``chunk`` starts: the block its request is in (every block
    before it was checked)."""
    return max(chunk.start, h.position - (h.position - chunk.start) % block)


def _side_file(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


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
