"""Which chunks of a running download are finished, and when that is checkpointed.

The :class:`ChunkRecorder` keeps the finished chunks with their xxh3 (what a resume
trusts after re-hashing) and writes :mod:`accel.fetch.checkpoint` every ``every_s``
seconds or every 8 MiB written, one write at a time in a thread. Each checkpoint also
holds what the running chunks have written, with the xxh3 their workers reported, so a
kill -9 loses only the bytes since the last checkpoint and the last report. On an
interrupt a running chunk's written prefix is found again (``partial``), with the
blocks written after its last report when block digests name them."""

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
#: the most a worker writes before it reports it (accel.fetch.worker: a Progress every
#: 1 MiB or 0.1 s, plus one read buffer of up to 256 KiB)
_UNREPORTED = MiB + 256 * 1024


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

    def value(
        self,
        size: int,
        etag: str | None,
        last_modified: str | None,
        running: Iterable[DoneChunk] = (),
    ) -> Checkpoint:
        """The checkpoint of the finished chunks and the ``running`` chunks' prefixes."""
        # Never two records over the same bytes (a resume refuses them): a kept head of
        # an unfinished block that a chunk starting earlier fetched again goes, and of
        # two records from one start the longer stays.
        chunks: list[DoneChunk] = []
        records = [*self.chunks.values(), *running]
        for c in sorted(records, key=lambda c: (c.start, -c.end)):
            if chunks and c.start < chunks[-1].end:
                continue
            chunks.append(c)
        return Checkpoint(
            url=self.url, size=size, etag=etag, last_modified=last_modified, chunks=chunks
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

    def partial(
        self,
        part: Path,
        spans: Iterable[tuple[int, int, int]],
        digests: tuple[str, ...] = (),
        block_size: int = 0,
    ) -> list[DoneChunk]:
        """The written prefixes ``[start, pos)`` of running chunks, with their xxh3.

        ``spans`` are ``(start, reported, end)``: each worker wrote every byte before
        ``reported`` before saying so, so those bytes are in the page cache (or on
        disk). With block digests, ``reported`` is rounded down to a block, and the
        blocks after it that the worker wrote but had not reported yet (up to
        ``_UNREPORTED`` bytes) are found by their digest: a block that matches holds
        the right bytes, whoever wrote them and whenever.
        """
        spans = [(s, r, e) for s, r, e in spans if e > s]
        if not spans:
            return []
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            return []
        try:
            out = []
            for s, reported, end in spans:
                pos = reported
                if digests and block_size:
                    # An unfinished block's bytes are kept too: a resume hashes them
                    # into the block's check (unfinished_blocks, Task.block_head).
                    limit = min(end, reported + _UNREPORTED)
                    aligned = reported - reported % block_size
                    pos = max(reported, _blocks_written(fd, aligned, limit, digests, block_size))
                if pos <= s:
                    continue
                digest = xxh3_of_range(fd, s, pos)
                if digest:
                    out.append(DoneChunk(start=s, end=pos, xxh3=digest))
            return out
        finally:
            os.close(fd)


def block_pieces(start: int, end: int, bs: int, size: int) -> list[tuple[int, int]]:
    """What a resume keeps of a recorded chunk ``[start, end)`` when blocks are checked:
    its whole blocks, and the head of the block it ends in (fetched from ``end`` on,
    checked whole: ``Task.block_head``). Bytes before the first block boundary of a
    chunk that starts inside a block (a head's own continuation) are fetched again."""
    if start % bs:
        start += bs - start % bs
    if start >= end:
        return []
    floor = end - end % bs if end != size else end
    pieces = [(start, floor)] if floor > start else []
    if floor < end:
        pieces.append((max(floor, start), end))
    return pieces


def unfinished_blocks(cp: Checkpoint | None, block_size: int) -> dict[int, int]:
    """``{block start: end}``: the kept heads of unfinished blocks in ``cp``, which a
    resume asks the server for no more (unvalidated: the resume checks them)."""
    if cp is None or not block_size:
        return {}
    heads = {}
    for c in cp.chunks:
        for s, e in block_pieces(c.start, c.end, block_size, cp.size):
            if e % block_size and e != cp.size:
                heads[s] = e
    return heads


def split_at_blocks(
    part: Path, done: list[DoneChunk], block_size: int, size: int
) -> list[DoneChunk]:
    """``done`` cut into :func:`block_pieces`, each piece with its own xxh3."""
    out = []
    fd = os.open(part, os.O_RDONLY)
    try:
        for c in done:
            pieces = block_pieces(c.start, c.end, block_size, size)
            if pieces == [(c.start, c.end)]:
                out.append(c)
                continue
            out += [DoneChunk(s, e, xxh3_of_range(fd, s, e)) for s, e in pieces]
    finally:
        os.close(fd)
    return sorted(out, key=lambda c: c.start)


def _blocks_written(fd: int, pos: int, limit: int, digests: tuple[str, ...], bs: int) -> int:
    """``pos`` (a block boundary) moved past every following block, ending by
    ``limit``, whose bytes match its digest."""
    import blake3

    while pos < limit and pos // bs < len(digests):
        end = min(pos + bs, limit)
        if end - pos < bs and pos // bs < len(digests) - 1:
            break  # cut short by the limit: only the file's last block may be short
        data = os.pread(fd, end - pos, pos)
        if len(data) != end - pos or blake3.blake3(data).hexdigest() != digests[pos // bs]:
            break
        pos = end
    return pos
