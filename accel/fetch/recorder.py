"""Which chunks of a running download are finished, and when that is checkpointed.

The :class:`ChunkRecorder` keeps the finished chunks with their xxh3 (what a resume
trusts after re-hashing) and writes :mod:`accel.fetch.checkpoint` every ``every_s``
seconds or every 8 MiB finished, one write at a time in a thread. A running chunk's
written prefix can be recorded too (``partial``), so an interrupt keeps the bytes
already written, not only whole chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from accel.errors import AccelError
from accel.fetch.checkpoint import Checkpoint, DoneChunk, save_checkpoint, xxh3_of_range
from accel.fetch.finish import disk_error

__all__ = ["ChunkRecorder"]

MiB = 1024 * 1024
_CHECKPOINT_BYTES = 8 * MiB


class ChunkRecorder:
    """The finished chunks of ``dest`` and their checkpoint schedule."""

    def __init__(self, url: str, dest: Path, every_s: float) -> None:
        self.url = url
        self.dest = dest
        self.every_s = every_s
        self.chunks: dict[int, DoneChunk] = {}
        # The first checkpoint comes after every_s or 8 MiB: a small file never pays
        # for one (two fsyncs per file matter when a version has 500 files).
        self.last_at = time.monotonic()
        self.written_bytes = 0
        self.writing: asyncio.Task[None] | None = None
        #: set when a scheduled write failed: the download stops with it
        self.error: AccelError | None = None
        # One write at a time, and never an older value over a newer one: a scheduled
        # write still in its thread when save_now runs would otherwise land after it.
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._saved = 0

    def record(self, chunk: DoneChunk) -> None:
        self.chunks[chunk.start] = chunk

    def value(self, size: int, etag: str | None, last_modified: str | None) -> Checkpoint:
        return Checkpoint(
            url=self.url,
            size=size,
            etag=etag,
            last_modified=last_modified,
            chunks=sorted(self.chunks.values(), key=lambda c: c.start),
        )

    def due(self, done_bytes: int) -> bool:
        if self.writing is not None and not self.writing.done():
            return False
        late = time.monotonic() - self.last_at >= self.every_s
        return late or done_bytes - self.written_bytes >= _CHECKPOINT_BYTES

    def write_soon(self, value: Checkpoint, done_bytes: int) -> None:
        """Write ``value`` in a thread (the caller checked :meth:`due`)."""
        self.last_at = time.monotonic()
        self.written_bytes = done_bytes
        self.writing = asyncio.ensure_future(self._write(value, next(self._numbers)))

    async def _write(self, value: Checkpoint, number: int) -> None:
        # No fdatasync of the data first: a rerun re-hashes every recorded chunk (xxh3)
        # before trusting it, so a chunk whose bytes a power cut lost is refetched, and
        # a kill -9 loses nothing the page cache holds. Syncing here made the checkpoint
        # trail the download by whatever the disk had not flushed yet (up to 150 MiB).
        try:
            await asyncio.to_thread(self._save, value, number)
        except OSError as exc:
            self.error = disk_error(exc, self.dest)

    def _save(self, value: Checkpoint, number: int) -> None:
        with self._lock:
            if number < self._saved:
                return  # a newer value is on disk already
            save_checkpoint(self.dest, value)
            self._saved = number

    def save_now(self, value: Checkpoint) -> None:
        """Write ``value`` now, on this thread (an interrupt, a failure): best effort.

        Waits for a scheduled write still in its thread, so this newer value is the
        one that stays on disk.
        """
        if self.writing is not None and not self.writing.done():
            self.writing.cancel()
        with contextlib.suppress(OSError):
            self._save(value, next(self._numbers))

    async def drain(self) -> None:
        """Wait for a write still in its thread (it would land after a cleanup)."""
        if self.writing is not None:
            await asyncio.gather(self.writing, return_exceptions=True)

    @property
    def ever_wrote(self) -> bool:
        return self.written_bytes > 0 or self.writing is not None

    def partial(self, part: Path, spans: Iterable[tuple[int, int]]) -> list[DoneChunk]:
        """The written prefixes ``[start, pos)`` of running chunks, with their xxh3.

        Each was written before its worker reported ``pos``, so the bytes are in the
        page cache (or on disk); hashing them here records what a resume can trust.
        """
        spans = [(s, e) for s, e in spans if e > s]
        if not spans:
            return []
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            return []
        try:
            out = []
            for s, e in spans:
                digest = xxh3_of_range(fd, s, e)
                if digest:
                    out.append(DoneChunk(start=s, end=e, xxh3=digest))
            return out
        finally:
            os.close(fd)
