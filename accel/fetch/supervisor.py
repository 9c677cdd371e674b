"""The supervisor: one file's download, driven through the engine's worker pool.

Owns the life of ``<dest>.part``: probe the remote, check disk space, preallocate, plan
chunks (resuming a valid checkpoint), hand chunks to workers, retry failed chunks with
backoff and jitter (``Retry-After`` honoured), split the slowest chunk when connections
go idle near the end, checkpoint the chunk map, hash the verified prefix while the rest
still downloads, and finally check size and SHA256 and rename atomically.

It never reads sockets (workers do) and never prints (it emits ProgressEvents).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import mmap
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from accel.errors import (
    AccelError,
    CheckpointError,
    DownloadError,
    InsufficientDiskSpaceError,
    IntegrityError,
    RemoteChangedError,
)
from accel.fetch.checkpoint import (
    Checkpoint,
    DoneChunk,
    checkpoint_path,
    load_checkpoint,
    part_path,
    remove_checkpoint,
    revalidate,
    save_checkpoint,
)
from accel.fetch.messages import Head, Task
from accel.fetch.plan import Chunk, ChunkPlan, choose_chunk_size
from accel.fetch.pool import Outcome, TaskHandle
from accel.fetch.types import DownloadResult, EventKind, Expected, ProgressEvent

if TYPE_CHECKING:
    from accel.fetch.engine import Engine

__all__ = ["FileDownload"]

MiB = 1024 * 1024
_DISK_MARGIN = 16 * MiB
_TICK_S = 0.25
_CHECKPOINT_BYTES = 8 * MiB


class FileDownload:
    """State of one file's download inside an :class:`~accel.fetch.engine.Engine`."""

    def __init__(
        self,
        engine: Engine,
        url: str,
        dest: Path,
        *,
        expected: Expected | None,
        progress: Callable[[ProgressEvent], None] | None,
        chunk_size: int | None,
        headers: dict[str, str],
        durable: bool = True,
    ) -> None:
        self.engine = engine
        self.url = url
        self.dest = Path(dest)
        self.part = part_path(self.dest)
        self.expected = expected or Expected()
        self.progress = progress
        self.chunk_size = chunk_size
        self.headers = tuple(headers.items())
        #: fsync the data before the rename and the directory after it (``False``: the
        #: caller syncs, see ``Engine.download``)
        self.durable = durable
        digests = self.expected.chunks
        self.block_size = digests.size if digests is not None else 0
        self.digests: tuple[str, ...] = tuple(digests.digests) if digests is not None else ()
        self.total: int | None = self.expected.size
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.ranged = True
        self.plan: ChunkPlan | None = None
        self.records: dict[int, DoneChunk] = {}
        self.handles: dict[int, TaskHandle] = {}
        self.fd = -1
        self.sha = hashlib.sha256()
        #: the file's SHA256 as a worker computed it while streaming all of it (then
        #: ``sha`` stays unused and the file is never read back)
        self.sha_hex: str | None = None
        self.hashed = 0
        self.hash_wake = asyncio.Event()
        self.received = 0
        self.resumed = 0
        self.retries = 0
        self.splitting = False
        # The first checkpoint comes after checkpoint_s or 8 MiB: a small file never
        # pays for one (two fsyncs per file matter when a version has 500 files).
        self.last_checkpoint = time.monotonic()
        self.checkpointed_bytes = 0
        self.checkpointing: asyncio.Task[None] | None = None
        self.fatal: BaseException | None = None
        self.t0 = time.monotonic()
        self.speed = 0.0
        self._speed_mark = (self.t0, 0)
        self.last_byte_at = 0.0
        self.hashed_at = 0.0
        self.probe_start = 0
        self.had_part = False

    # --- events ------------------------------------------------------------------
    def _emit(self, kind: EventKind, message: str = "") -> None:
        if self.progress is None:
            return
        committed = self.plan.done_bytes if self.plan is not None else 0
        inflight = sum(max(0, h.position - h.task.start) for h in self.handles.values())
        eta = None
        if self.total is not None and self.speed > 0:
            eta = max(0.0, (self.total - committed - inflight) / self.speed)
        self.progress(
            ProgressEvent(
                kind=kind,
                url=self.url,
                dest=self.dest,
                total=self.total,
                committed=committed,
                inflight=inflight,
                speed_bps=self.speed,
                eta_s=eta,
                message=message,
            )
        )

    def _tick(self) -> None:
        now = time.monotonic()
        t, seen = self._speed_mark
        if now - t >= _TICK_S:
            rate = (self.received - seen) / (now - t)
            self.speed = rate if self.speed == 0 else 0.5 * self.speed + 0.5 * rate
            self._speed_mark = (now, self.received)
            self._emit("progress")

    # --- the whole download ----------------------------------------------------------
    async def run(self) -> DownloadResult:
        self._emit("started")
        try:
            result = await self._run()
        except asyncio.CancelledError:
            self._stop_everything()
            self._save_checkpoint_now()
            self._close()
            raise
        except BaseException as exc:
            self._stop_everything()
            if isinstance(exc, IntegrityError) and self.plan is not None and self.plan.finished:
                # The whole file is wrong and no block says which part: start over.
                self._close()
                with contextlib.suppress(OSError):
                    self.part.unlink()
                remove_checkpoint(self.dest)
            else:
                self._save_checkpoint_now()
                self._close()
            if isinstance(exc, AccelError):
                self._emit("error", str(exc))
            raise
        self._close()
        return result

    async def _run(self) -> DownloadResult:
        engine = self.engine
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        # A previous run left traces (a killed checkpoint writer's temp file) only if it
        # got as far as creating the .part: otherwise the final cleanup skips its scan.
        self.had_part = self.part.exists()
        if not self.had_part and self._fits_one_request():
            small = await self._run_whole()
            if small is not None:
                return small
        try:
            cp = load_checkpoint(self.dest)
        except CheckpointError:
            cp = None
            remove_checkpoint(self.dest)
        start = self._probe_start(cp)
        try:
            head, probe = await self._probe(start, self._probe_length())
        except RemoteChangedError:
            if start == 0:
                raise
            # The checkpoint describes another file (a 416 past the end, say).
            cp, start = None, 0
            remove_checkpoint(self.dest)
            head, probe = await self._probe(0, self._probe_length())
        if not head.ranged and start > 0:
            # A 200 to a resumed probe is the file from byte 0, not from ``start``.
            engine.pool.decide(probe, None)
            engine.release_slot()
            start = 0
            head, probe = await self._probe(0, self._probe_length())
        self.probe_start = start
        try:
            first = await self._prepare(head, cp)
        except BaseException:
            engine.pool.decide(probe, None)
            engine.release_slot()
            raise
        assert self.plan is not None
        tasks: set[asyncio.Task[None]] = set()
        if first is None:
            engine.pool.decide(probe, None)
            engine.release_slot()
        else:
            engine.pool.decide(probe, first.end)
            tasks.add(asyncio.ensure_future(self._run_chunk(first, probe)))
        hasher = asyncio.ensure_future(self._hash_loop())
        try:
            await self._drive(tasks)
            self.last_byte_at = time.monotonic()
            self.hash_wake.set()
            await hasher
            self.hashed_at = time.monotonic()
        finally:
            if not hasher.done():
                hasher.cancel()
                await asyncio.gather(hasher, return_exceptions=True)
        return await self._finish()

    def _fits_one_request(self) -> bool:
        """A fresh file of known size that the first request would fetch whole anyway."""
        size = self.expected.size
        if not size or (self.chunk_size is not None and self.chunk_size < size):
            return False
        return size <= self._probe_length() and not checkpoint_path(self.dest).exists()

    async def _run_whole(self) -> DownloadResult | None:
        """Small files (most files of a model version): one request, no round trip.

        The ``.part`` is created first and the worker streams the whole file into it,
        checking blake3 blocks and computing the SHA256 as it goes; the supervisor then
        only compares and renames. Any failure gives the file back to the full path
        (probe, plan, retries) from a clean start: ``None``. Errors no retry can fix
        (404, 401, a size that is not the expected one) are raised as they are.
        """
        engine, size = self.engine, self.expected.size
        assert size is not None
        self._check_space(size)
        try:
            self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise _disk_error(exc, self.dest) from exc
        # With the file's SHA256 known, that one hash checks every byte of this single
        # request, so the worker skips the blake3 blocks (one hash per byte, not two).
        # A mismatch then goes to the ranged path, where the blocks find the bad bytes.
        verify_by_sha = bool(self.expected.sha256)
        task = self._task(0, size, sha256=True, blocks=not verify_by_sha)
        await engine.acquire_slot()
        try:
            handle = engine.pool.submit(task)
        except BaseException:
            engine.release_slot()
            self._drop_part()
            raise
        handle.on_progress = self._on_progress
        self.handles[-1] = handle
        try:
            outcome = await asyncio.shield(handle.done)
        except asyncio.CancelledError:
            engine.pool.cancel(handle)
            self._drop_part()  # a few bytes: the rerun fetches them again
            raise
        finally:
            self.handles.pop(-1, None)
            engine.release_slot()
        self.received += max(0, (outcome.end or handle.position) - handle.position)
        mismatch = (
            outcome.sha256 is not None
            and verify_by_sha
            and bool(self.digests)
            and outcome.sha256 != (self.expected.sha256 or "").lower()
        )
        if (
            outcome.error is None
            and outcome.end == size
            and outcome.sha256 is not None
            and not mismatch
        ):
            self.plan = ChunkPlan(size, size, done=[(0, size)])
            self.sha_hex, self.hashed = outcome.sha256, size
            self.last_byte_at = time.monotonic()
            return await self._finish()
        self._drop_part()
        if outcome.error is not None and not outcome.retryable:
            raise outcome.error
        self.retries += 1
        if mismatch:
            why = f"SHA256 {outcome.sha256} is not the expected one"
        elif outcome.error is not None:
            why = outcome.error.message
        else:
            why = "incomplete answer"
        self._emit("chunk_retry", f"whole-file request: {why}; trying again by ranges")
        return None

    def _drop_part(self) -> None:
        self.fd_closed()
        with contextlib.suppress(OSError):
            self.part.unlink()

    def _probe_start(self, cp: Checkpoint | None) -> int:
        """Where the first request starts: the first byte a checkpoint lacks, so a
        resumed download does not fetch its first chunk again only to learn the size."""
        if cp is None or (self.expected.size is not None and cp.size != self.expected.size):
            return 0
        pos = 0
        for c in sorted(cp.chunks, key=lambda c: c.start):
            if c.start != pos:
                break
            pos = c.end
        align = self.block_size or 1
        pos -= pos % align
        return pos if pos < cp.size else 0

    async def _probe(self, start: int, length: int) -> tuple[Head, TaskHandle]:
        """The first request: learn size and validators, retrying like any chunk."""
        engine = self.engine
        attempt = 0
        while True:
            attempt += 1
            await engine.acquire_slot()
            # From byte 0, the request may well be the whole file (every small file):
            # the worker then hashes it as it streams.
            whole = start == 0 and (self.total is None or length >= self.total)
            probe = engine.pool.submit(self._task(start, start + length, probe=True, sha256=whole))
            head_fut: asyncio.Future[Head] = asyncio.get_running_loop().create_future()
            probe.on_head = _setter(head_fut)
            probe.on_progress = self._on_progress
            try:
                head = await _first(head_fut, probe.done)
            except BaseException:
                engine.pool.cancel(probe)
                engine.release_slot()
                raise
            if head is not None:
                return head, probe
            engine.release_slot()
            outcome = probe.done.result()
            assert outcome.error is not None
            if not outcome.retryable or attempt >= engine.max_attempts:
                raise outcome.error
            self.retries += 1
            delay = engine.backoff(attempt, outcome.retry_after)
            self._emit(
                "chunk_retry", f"first request: {outcome.error.message}; retry in {delay:.1f} s"
            )
            await asyncio.sleep(delay)

    def _probe_length(self) -> int:
        align = self.block_size or 1
        if self.chunk_size:
            n = self.chunk_size
        elif self.total is not None:
            n = choose_chunk_size(self.total, self.engine.capacity, align)
        else:
            n = 4 * MiB
        return max(1, -(-n // align) * align)

    def _auto_chunk_size(self) -> int:
        """The chunk size for the connections there are now (the total is known)."""
        assert self.total is not None
        return choose_chunk_size(self.total, self.engine.capacity, self.block_size or 1)

    async def _prepare(self, head: Head, cp: Checkpoint | None) -> Chunk | None:
        """Decide from the probe's answer: plan, resume or not, space, preallocate."""
        total = head.total
        if self.expected.size is not None and total is not None and total != self.expected.size:
            raise IntegrityError(
                f"{self.url}: the server has {total} bytes, expected {self.expected.size}",
                url=self.url,
                expected=self.expected.size,
                actual=total,
            )
        if total is None:
            raise DownloadError(
                f"{self.url}: the server does not say how large the file is",
                url=self.url,
                hint="pass --size, or use a server that sends Content-Length",
            )
        if self.digests and len(self.digests) != -(-total // self.block_size):
            raise IntegrityError(
                f"{self.url}: the manifest has {len(self.digests)} block digests for {total} bytes",
                url=self.url,
            )
        self.total = total
        self.etag = head.etag
        self.last_modified = head.last_modified
        self.ranged = head.ranged
        done: list[DoneChunk] = []
        if cp is not None and self.ranged and cp.same_remote(total, head.etag, head.last_modified):
            done = await asyncio.to_thread(revalidate, self.dest, cp)
        elif cp is not None:
            remove_checkpoint(self.dest)
        have = sum(c.end - c.start for c in done)
        self.resumed = have
        self._check_space(total - have)
        flags = os.O_RDWR | os.O_CREAT
        if not done:
            flags |= os.O_TRUNC
        self.fd = os.open(self.part, flags, 0o644)
        if total:
            try:
                os.posix_fallocate(self.fd, 0, total)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientDiskSpaceError(
                        f"no space for {total} bytes at {self.part}",
                        path=str(self.part),
                        needed=total - have,
                        free=shutil.disk_usage(self.part.parent).free,
                    ) from exc
                os.ftruncate(self.fd, total)
        for c in done:
            self.records[c.start] = c
        size = (self.chunk_size or self._auto_chunk_size()) if self.ranged else max(1, total)
        self.plan = ChunkPlan(
            total, size, align=self.block_size or 1, done=[(c.start, c.end) for c in done]
        )
        if not self.ranged:
            self._emit("progress", "the server ignores Range: falling back to one stream")
        at = self.probe_start
        first = self.plan.pending_at(at)
        if first is None or head.end is None or head.end <= at:
            return None
        return self.plan.take_range(at, min(head.end, first.end))

    def _check_space(self, needed: int) -> None:
        free = shutil.disk_usage(self.dest.parent).free
        existing = self.part.stat().st_size if self.part.exists() else 0
        if needed > 0 and needed + _DISK_MARGIN > free + existing:
            raise InsufficientDiskSpaceError(
                f"{self.dest.parent} has {free} bytes free, the download needs {needed}",
                path=str(self.dest.parent),
                needed=needed,
                free=free,
            )

    def _task(
        self,
        start: int,
        end: int | None,
        *,
        probe: bool = False,
        sha256: bool = False,
        blocks: bool = True,
    ) -> Task:
        digests: tuple[str, ...] = ()
        if self.digests and blocks:
            bs = self.block_size
            last = len(self.digests) if end is None else -(-end // bs)
            digests = self.digests[start // bs : last]
        e = self.engine
        return Task(
            url=self.url,
            path=str(self.part),
            start=start,
            end=end,
            headers=self.headers,
            etag=self.etag,
            total=self.total,
            probe=probe,
            ranged=self.ranged,
            block_size=self.block_size,
            digests=digests,
            stall_timeout=e.stall_timeout,
            min_rate=e.min_rate,
            sha256=sha256,
        )

    async def _drive(self, tasks: set[asyncio.Task[None]]) -> None:
        plan = self.plan
        engine = self.engine
        assert plan is not None
        try:
            while not plan.finished:
                if self.fatal is not None:
                    raise self.fatal
                # Sized by the connections there are now: when the tuner adds some,
                # later chunks get shorter, and what all of them hold unfinished
                # stays near 64 MiB (a kill -9 loses no more).
                limit = None if self.chunk_size or not self.ranged else self._auto_chunk_size()
                while plan.pending_count and engine.try_acquire_slot():
                    chunk = plan.take(limit)
                    if chunk is None:
                        engine.release_slot()
                        break
                    tasks.add(asyncio.ensure_future(self._run_chunk(chunk, None)))
                if not plan.pending_count and engine.free_slots() > 0:
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
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_chunk(self, chunk: Chunk, handle: TaskHandle | None) -> None:
        """Fetch one chunk once; on a retryable failure, back off and give it back."""
        engine = self.engine
        assert self.plan is not None
        if handle is None:
            try:
                handle = engine.pool.submit(self._task(chunk.start, chunk.end))
            except BaseException:
                engine.release_slot()
                raise
        handle.on_progress = self._on_progress
        handle.on_trim = lambda new_end: self._on_trim(chunk, new_end)
        self.handles[chunk.id] = handle
        try:
            outcome = await asyncio.shield(handle.done)
        except asyncio.CancelledError:
            engine.pool.cancel(handle)
            raise
        finally:
            self.handles.pop(chunk.id, None)
            engine.release_slot()
        self.received += max(0, (outcome.end or handle.position) - handle.position)
        if outcome.error is None:
            self._complete(chunk, outcome)
            return
        if not outcome.retryable or chunk.attempts >= engine.max_attempts:
            raise outcome.error
        self.retries += 1
        delay = engine.backoff(chunk.attempts, outcome.retry_after)
        self._emit(
            "chunk_retry",
            f"bytes {chunk.start}-{chunk.end - 1}: {outcome.error.message}; "
            f"retry {chunk.attempts} in {delay:.1f} s",
        )
        await asyncio.sleep(delay)
        self.plan.fail(chunk)

    def _complete(self, chunk: Chunk, outcome: Outcome) -> None:
        assert self.plan is not None
        if outcome.end != chunk.end:
            raise DownloadError(
                f"{self.url}: a worker finished bytes {chunk.start}-{outcome.end}, "
                f"expected up to {chunk.end}"
            )
        self.plan.complete(chunk)
        self.records[chunk.start] = DoneChunk(start=chunk.start, end=chunk.end, xxh3=outcome.xxh3)
        if outcome.sha256 is not None and chunk.start == 0 and chunk.end == self.total:
            # One task streamed the whole file and hashed it on the way: nothing to read
            # back. (The hash loop has hashed nothing yet: no prefix was done before.)
            self.sha_hex, self.hashed = outcome.sha256, chunk.end
        self.hash_wake.set()

    def _on_progress(self, old: int, new: int) -> None:
        self.received += new - old

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
        self.engine.pool.trim(h, at)

    # --- checkpoint and hashing ------------------------------------------------------
    def _checkpoint_value(self) -> Checkpoint:
        assert self.total is not None
        return Checkpoint(
            url=self.url,
            size=self.total,
            etag=self.etag,
            last_modified=self.last_modified,
            chunks=sorted(self.records.values(), key=lambda c: c.start),
        )

    def _maybe_checkpoint(self) -> None:
        """Checkpoint every ``checkpoint_s`` or every 8 MiB finished, one at a time."""
        if not self.ranged or self.fd < 0 or self.plan is None:
            return
        now = time.monotonic()
        done = self.plan.done_bytes
        due = now - self.last_checkpoint >= self.engine.checkpoint_s
        if not due and done - self.checkpointed_bytes < _CHECKPOINT_BYTES:
            return
        if self.checkpointing is not None and not self.checkpointing.done():
            return
        self.last_checkpoint = now
        self.checkpointed_bytes = done
        self.checkpointing = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        # No fdatasync of the data first: a rerun re-hashes every recorded chunk (xxh3)
        # before trusting it, so a chunk whose bytes a power cut lost is refetched, and
        # a kill -9 loses nothing the page cache holds. Syncing here made the checkpoint
        # trail the download by whatever the disk had not flushed yet (up to 150 MiB).
        value = self._checkpoint_value()
        try:
            await asyncio.to_thread(save_checkpoint, self.dest, value)
        except OSError as exc:
            self.fatal = _disk_error(exc, self.dest)

    def _save_checkpoint_now(self) -> None:
        if not self.ranged or self.fd < 0 or self.total is None:
            return
        if self.checkpointing is not None and not self.checkpointing.done():
            self.checkpointing.cancel()
        with contextlib.suppress(OSError):
            save_checkpoint(self.dest, self._checkpoint_value())

    async def _hash_loop(self) -> None:
        """SHA256 of the finished prefix, advanced while later chunks still download."""
        assert self.plan is not None and self.total is not None
        rfd = -1
        try:
            while self.hashed < self.total:
                self.hash_wake.clear()
                target = self.plan.done_prefix()
                if target > self.hashed:
                    if rfd < 0:  # not at all when a worker hashed the whole file
                        rfd = os.open(self.part, os.O_RDONLY)
                    await asyncio.to_thread(self._hash_to, rfd, target)
                    continue
                await self.hash_wake.wait()
        finally:
            if rfd >= 0:
                os.close(rfd)

    def _hash_to(self, rfd: int, target: int) -> None:
        # Hashed straight from the page cache through a read-only mapping: no copy into
        # a buffer, and one GIL release per 16 MiB window instead of two per MiB (the event
        # loop thread holds the GIL often while the workers report). Measured on the
        # 1 GiB bench file (256 MiB windows): 8-10% less wall than preadv into 1 or 16 MiB.
        start = self.hashed
        if os.fstat(rfd).st_size < target:  # a mapping past the end would be SIGBUS
            raise DownloadError(f"{self.part} is shorter than expected: was it truncated?")
        while self.hashed < target:
            base = self.hashed - self.hashed % mmap.ALLOCATIONGRANULARITY
            end = min(target, base + _HASH_WINDOW)
            mm = mmap.mmap(rfd, end - base, prot=mmap.PROT_READ, offset=base)
            with mm, memoryview(mm) as view:
                self.sha.update(view[self.hashed - base :])
            self.hashed = end
        # Start writing the hashed prefix back to disk now, so the fsync before the
        # rename only waits for the last few MiB (last byte -> verified file stays short).
        _start_writeback(rfd, start, target - start)

    async def _finish(self) -> DownloadResult:
        assert self.total is not None
        digest = self.sha_hex or self.sha.hexdigest()
        if self.expected.sha256 and digest != self.expected.sha256.lower():
            raise IntegrityError(
                f"{self.url}: SHA256 {digest} does not match the expected {self.expected.sha256}",
                url=self.url,
                expected=self.expected.sha256,
                actual=digest,
            )
        self._emit("verified", f"sha256 {digest}")
        if self.checkpointing is not None:
            # A checkpoint write still in its thread would land after the cleanup below
            # and leave a stale <name>.part.json beside the finished file.
            await asyncio.gather(self.checkpointing, return_exceptions=True)
        try:
            sweep = self.had_part or self.checkpointed_bytes > 0 or self.checkpointing is not None
            if self.durable or sweep:
                await asyncio.to_thread(
                    _publish, self.fd, self.part, self.dest, self.durable, sweep=sweep
                )
            else:  # a rename and an unlink: cheaper than a hop to a thread and back
                _publish(self.fd, self.part, self.dest, False, sweep=False)
        except OSError as exc:
            raise _disk_error(exc, self.dest) from exc
        self.fd_closed()
        now = time.monotonic()
        tail = now - self.last_byte_at
        self._emit("done", f"{self.total} bytes in {now - self.t0:.2f} s")
        return DownloadResult(
            path=self.dest,
            size=self.total,
            sha256=digest,
            elapsed_s=now - self.t0,
            bytes_fetched=self.received,
            resumed_bytes=self.resumed,
            ranged=self.ranged,
            connections=self.engine.peak_connections,
            retries=self.retries,
            verify_tail_s=tail,
        )

    def fd_closed(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _stop_everything(self) -> None:
        for h in list(self.handles.values()):
            self.engine.pool.cancel(h)

    def _close(self) -> None:
        self.fd_closed()


#: the most of the ``.part`` the hash loop maps at once: mapped page cache counts in the
#: process's RSS (256 MiB windows showed as 292 MiB peak tree RSS for a 1 GiB download)
_HASH_WINDOW = 16 * MiB


def _load_sync_file_range() -> Callable[[int, int, int], None]:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return lambda fd, off, n: None

    def start(fd: int, off: int, n: int) -> None:
        fn(fd, off, n, 2)  # SYNC_FILE_RANGE_WRITE: start writeback, do not wait

    return start


_start_writeback = _load_sync_file_range()


def _publish(fd: int, part: Path, dest: Path, durable: bool = True, *, sweep: bool = True) -> None:
    """fsync the data, rename ``.part`` to its final name, fsync the directory, and
    remove the checkpoint (its cleanup scans the directory: kept off the event loop).

    ``durable=False`` skips both fsyncs. The rename still comes only after the SHA256
    check, so a killed process never leaves a half file under the final name; only a
    power cut can, and a caller that asks for this must sync before trusting the file.
    """
    if durable:
        os.fsync(fd)
    os.replace(part, dest)
    if durable:
        dfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    remove_checkpoint(dest, sweep=sweep)


def _disk_error(exc: OSError, dest: Path) -> AccelError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientDiskSpaceError(
            f"no space left while writing {dest}", path=str(dest), needed=None, free=0
        )
    return DownloadError(f"cannot write {dest}: {exc.strerror or exc}", path=str(dest))


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
