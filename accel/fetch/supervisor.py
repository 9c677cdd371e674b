"""The supervisor: one file's download, driven through the engine's worker pool.

Owns the life of ``<dest>.part``: probe the remote, check disk space, preallocate, plan
chunks (resuming a valid checkpoint), hand chunks to workers, retry failed chunks with
backoff and jitter (``Retry-After`` honoured), split the slowest chunk when connections
go idle near the end, checkpoint the chunk map, hash the verified prefix while the rest
still downloads, and finally check size and SHA256 and rename atomically.

Its parts live beside it: the first request in :mod:`~accel.fetch.probe`, the chunk
loop (slots, retries, splits) in :mod:`~accel.fetch.drive`, one-request downloads in
:mod:`~accel.fetch.single`, the rerun of a finished file in :mod:`~accel.fetch.complete`,
the repair of a wrong SHA256 in :mod:`~accel.fetch.repair`, the chunk
records and their checkpoint schedule in :mod:`~accel.fetch.recorder`, the prefix hash
and the final rename in :mod:`~accel.fetch.finish`; the engine's shared parts (pool,
slots, retry policy) come in as one :class:`~accel.fetch.slots.Shared`. It never reads
sockets (workers do) and never prints (it emits ProgressEvents).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import random
import shutil
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from accel.errors import (
    AccelError,
    CheckpointError,
    DownloadError,
    InsufficientDiskSpaceError,
    IntegrityError,
    RemoteChangedError,
    SizeMismatchError,
)
from accel.fetch.checkpoint import (
    Checkpoint,
    DoneChunk,
    checkpoint_path,
    load_checkpoint,
    part_path,
    remove_checkpoint,
    revalidate,
)
from accel.fetch.complete import reuse_existing
from accel.fetch.finish import PrefixHasher, disk_error, publish
from accel.fetch.http1 import origin_of
from accel.fetch.messages import Head, Task
from accel.fetch.plan import Chunk, ChunkPlan, choose_chunk_size
from accel.fetch.pool import TaskHandle
from accel.fetch.probe import probe, probe_length, probe_start
from accel.fetch.recorder import ChunkRecorder, split_at_blocks, unfinished_blocks
from accel.fetch.redirects import strip_credentials
from accel.fetch.repair import repair
from accel.fetch.single import fetch_once, special_target
from accel.fetch.slots import Shared
from accel.fetch.sources import DEFAULT_MAX_CONNECTIONS, SourcePolicy
from accel.fetch.sources_links import Link
from accel.fetch.sources_order import BlockOrder
from accel.fetch.sources_poll import HAVE_INTERVAL_S, PeerHaves
from accel.fetch.types import DownloadResult, EventKind, Expected, ProgressEvent

__all__ = ["FileDownload"]

MiB = 1024 * 1024
_DISK_MARGIN = 16 * MiB
#: seconds a folder's free-space figure is used before it is read again
_FREE_SPACE_S = 1.0
_TICK_S = 0.25
#: how often a download with peers writes its checkpoint (what a peer server reads)
PEER_CHECKPOINT_S = 0.25


class FileDownload(PeerHaves):
    """State of one file's download inside an :class:`~accel.fetch.engine.Engine`."""

    def __init__(
        self,
        shared: Shared,
        url: str,
        dest: Path,
        *,
        expected: Expected | None,
        progress: Callable[[ProgressEvent], None] | None,
        chunk_size: int | None,
        headers: dict[str, str],
        durable: bool = True,
        secret_headers: frozenset[str] = frozenset(),
        check: bool = False,
        mirrors: Sequence[str] = (),
        max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS,
        peers: Sequence[str] = (),
        peer_headers: Mapping[str, str] | None = None,
        order_seed: int | None = None,
        have_interval: float = HAVE_INTERVAL_S,
        find_peers: Callable[[], Awaitable[Sequence[str]]] | None = None,
    ) -> None:
        self.shared = shared
        self.url = url
        digests = (expected or Expected()).chunks
        # Peers are read block by block, each block checked: without block digests
        # nothing would say which of their bytes are good, so they are not used.
        peers = [p for p in peers if p not in (url, *mirrors)] if digests is not None else []
        #: every source of these bytes, ``url`` first: the last resort (sources.py)
        # One source keeps the engine's whole connection budget (as before sources
        # existed); with several, each is capped like aria2's per-server limit.
        cap = max_connections_per_source if mirrors or peers else 1 << 16
        self.policy = SourcePolicy.of(
            [url, *mirrors], last_resort=0, max_connections=cap, peers=peers
        )
        #: the fleet token and the like: sent to peers, and to nothing else
        self.peer_headers = tuple((peer_headers or {}).items())
        self.have_interval = have_interval
        self.have_wake = None
        #: more peers as the download runs (a fleet starting at once finds each other
        #: only once they have started); unused without block digests
        self.find_peers = find_peers if digests is not None else None
        if self.find_peers is not None:
            # peers are coming (a fleet starting at once): chunks go by the block order
            # from the start, and the hub is not asked for everything at once
            self.policy = self.policy.expecting(True)
        #: this node's own order of the blocks (sources_order.py), from a seed
        self.order_seed = order_seed if order_seed is not None else random.getrandbits(64)
        self.order = BlockOrder.ascending(0)
        self.hub_front = None
        self.links = [Link(s.url) for s in self.policy.sources]
        self.avoid: dict[int, set[int]] = {}
        self.chunk_src: dict[int, tuple[int, float]] = {}
        self.races = {}
        self.observe_mark = (0.0, [], [])
        #: the source of each finished chunk (by start): the first vote of a repair
        self.done_src: dict[int, int] = {}
        #: a repair's answers per piece start: (source, xxh3), oldest first
        self.votes: dict[int, list[tuple[int, str]]] = {}
        #: (piece start, source) whose lost vote was counted already
        self.charged: set[tuple[int, int]] = set()
        self.dest = Path(dest)
        self.part = part_path(self.dest)
        self.expected = expected or Expected()
        self.progress = progress
        self.chunk_size = chunk_size
        self.headers = tuple(headers.items())
        self.secret_headers = frozenset(h.lower() for h in secret_headers)
        #: fsync the data before the rename and the directory after it (``False``: the
        #: caller syncs, see ``Engine.download``)
        self.durable = durable
        #: re-hash a file already at ``dest`` even when its record vouches for it
        self.check = check
        #: ``{block start: end}``: an unfinished block's bytes kept by an interrupt, which
        #: the chunk starting at that block asks for no more (recorder.unfinished_blocks)
        self.heads: dict[int, int] = {}
        #: the good blocks of a file already at ``dest``, now our ``.part`` (complete.py)
        self.adopted: Checkpoint | None = None
        digests = self.expected.chunks
        self.block_size = digests.size if digests is not None else 0
        self.digests: tuple[str, ...] = tuple(digests.digests) if digests is not None else ()
        self.total: int | None = self.expected.size
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.ranged = True
        self.plan: ChunkPlan | None = None
        self.recorder = ChunkRecorder(url, self.dest, shared.checkpoint_s)
        if self.policy.partial:
            # A node serving its verified blocks to peers reads them from the checkpoint:
            # written often, other nodes see a block soon after it is done here.
            self.recorder.every_s = min(shared.checkpoint_s, PEER_CHECKPOINT_S)
        self.handles: dict[int, TaskHandle] = {}
        self.fd = -1
        self.hasher: PrefixHasher | None = None
        self.received = 0
        self.resumed = 0
        self.retries = 0
        self.splitting = False
        self.t0 = time.monotonic()
        self.speed = 0.0
        self._speed_mark = (self.t0, 0)
        self.last_byte_at = 0.0
        self.hashed_at = 0.0
        self.probe_start = 0
        self.had_part = False
        #: no checkpoint before this run (``_fits_one_request`` looked) nor since
        self.no_checkpoint = False

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
                sources=self.source_figures(),
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
            result = await self._run_translated()
        except asyncio.CancelledError:
            self._keep_written_prefixes()
            self._stop_everything()
            self._save_checkpoint_now()
            self._close()
            self._drop_race_file()
            raise
        except BaseException as exc:
            self._stop_everything()
            if (
                isinstance(exc, IntegrityError)
                and self.plan is not None
                and self.plan.finished
                and not getattr(exc, "resumable", False)  # a repair that a rerun goes on with
            ):
                # The whole file is wrong and no block says which part: start over.
                self._close()
                with contextlib.suppress(OSError):
                    self.part.unlink()
                remove_checkpoint(self.dest)
            else:
                self._keep_written_prefixes()
                self._save_checkpoint_now()
                self._close()
            if isinstance(exc, AccelError):
                self._emit("error", str(exc))
            self._drop_race_file()
            raise
        self._close()
        self._drop_race_file()
        return result

    def _drop_race_file(self) -> None:
        if len(self.policy) > 1:
            with contextlib.suppress(OSError):
                self.race_path.unlink()

    async def _run_translated(self) -> DownloadResult:
        try:
            return await self._run()
        except OSError as exc:  # the local file's (mkdir, open, fallocate): one seam
            raise disk_error(exc, self.dest) from exc

    async def _run(self) -> DownloadResult:
        pool, slots = self.shared.pool, self.shared.slots
        parent = str(self.dest.parent)
        if parent not in self.shared.made_dirs:
            os.makedirs(parent, exist_ok=True)
            self.shared.made_dirs.add(parent)
        try:
            os.lstat(self.dest)
            there = True
        except FileNotFoundError:
            there = False  # nothing at dest (every file of a fresh install): one lstat
        if there and special_target(self.dest):
            return await self._run_stream()
        # A previous run left traces (a killed checkpoint writer's temp file) only if it
        # got as far as creating the .part: otherwise the final cleanup skips its scan.
        self.had_part = self.part.exists()
        if not self.had_part and there:
            already = await self._reuse_existing()
            if already is not None:
                return already
        if not self.had_part and self._fits_one_request():
            small = await self._run_whole()
            if small is not None:
                return small
        if self.find_peers is not None:
            await self._find_peers()  # before the probe: with peers, it keeps no bytes
        try:
            cp = self.adopted or load_checkpoint(self.dest)
        except CheckpointError:
            cp = None
            remove_checkpoint(self.dest)
        start = probe_start(cp, self.expected.size, self.block_size)
        if self.digests:
            self.heads = unfinished_blocks(cp, self.block_size)
        # With peers the probe keeps no bytes (which blocks come from the hub is the
        # block order's choice): one byte says size and validators, and no node of a
        # fleet makes the hub send the same first megabytes into a connection it drops.
        length = 1 if self.policy.partial and self.digests else self._probe_length()
        try:
            head, first_req = await self._probe(
                start, probe_length(cp, start, length, self.block_size)
            )
        except RemoteChangedError:
            if start == 0:
                raise
            # The checkpoint describes another file (a 416 past the end, say).
            cp, start = None, 0
            remove_checkpoint(self.dest)
            head, first_req = await self._probe(0, self._probe_length())
        if not head.ranged and start > 0:
            # A 200 to a resumed probe is the file from byte 0, not from ``start``.
            pool.decide(first_req, None)
            slots.release()
            start = 0
            head, first_req = await self._probe(0, self._probe_length())
        self.probe_start = start
        self.links[0].resolved = head.url
        try:
            first = await self._prepare(head, cp)
        except BaseException:
            pool.decide(first_req, None)
            slots.release()
            raise
        assert self.plan is not None and self.hasher is not None
        tasks: set[asyncio.Task[None]] = set()
        if first is None:
            pool.decide(first_req, None)
            slots.release()
        else:
            pool.decide(first_req, first.end)
            self.policy = self.policy.started(0)
            tasks.add(asyncio.ensure_future(self._run_chunk(first, first_req)))
        hashing = asyncio.ensure_future(self.hasher.run(self.plan.done_prefix))
        polling: asyncio.Future[None] | None = None
        try:
            if (self.policy.partial or self.find_peers is not None) and self.ranged:
                # Before the first chunk: which peers are there and what they hold
                # decides how much the hub is asked for at once (sources_order.py).
                await self._ask_haves()
                polling = asyncio.ensure_future(self._poll_haves())
            await self._drive(tasks)
            self.last_byte_at = time.monotonic()
            self.hasher.wake.set()
            await hashing
            self.hashed_at = time.monotonic()
        finally:
            for job in (hashing, polling):
                if job is not None and not job.done():
                    job.cancel()
                    await asyncio.gather(job, return_exceptions=True)
        return await self._finish()

    async def _reuse_existing(self) -> DownloadResult | None:
        """A file already at ``dest``: complete (no request), or the ``.part`` of a
        repair that fetches only the blocks that differ (see complete.py)."""
        # (called only with something at dest: a fresh file costs no hop to a thread)
        try:
            reuse = await asyncio.to_thread(
                reuse_existing, self.url, self.dest, self.expected, self.check, self.durable
            )
        except OSError as exc:
            raise disk_error(exc, self.dest) from exc
        if reuse is None or not reuse.complete:
            self.adopted = reuse.checkpoint if reuse is not None else None
            self.had_part = reuse is not None
            if reuse is not None:
                self._emit("progress", f"{reuse.bad_blocks} block(s) differ: fetching only those")
            return None
        self.total = size = reuse.size
        self.plan = ChunkPlan(size, max(1, size), done=[(0, size)] if size else None)
        self._emit("already_complete", f"already complete, verified (sha256 {reuse.sha256})")
        return reuse.result(self.dest, time.monotonic() - self.t0)

    def _fits_one_request(self) -> bool:
        """A fresh file of known size that the first request would fetch whole anyway."""
        size = self.expected.size
        if not size or (self.chunk_size is not None and self.chunk_size < size):
            return False
        if size > self._probe_length() or checkpoint_path(self.dest).exists():
            return False
        self.no_checkpoint = True  # none before; only the recorder could write one now
        return True

    async def _run_whole(self) -> DownloadResult | None:
        """Small files (most files of a model version): one request, no round trip.

        The ``.part`` is created first and the worker streams the whole file into it,
        checking blake3 blocks and computing the SHA256 as it goes; the supervisor then
        only compares and renames. With mirrors, the request goes to one source picked
        by the file's path (a version's small files spread over its sources), and a
        source that fails (or answers with other bytes) hands the file to the next one,
        each in one request. Any failure of them all gives the file back to the full
        path (probe, plan, retries) from a clean start: ``None``. Errors no retry can
        fix (404, 401, a size that is not the expected one) from the URL itself are
        raised as they are; from a mirror they are that mirror's (quarantined).
        """
        size = self.expected.size
        assert size is not None
        self._check_space(size, existing=0)  # (no .part: _run looked)
        whole = [i for i, s in enumerate(self.policy.sources) if not s.peer]
        k = zlib.crc32(str(self.dest).encode()) % len(whole)
        order = whole[k:] + whole[:k]
        for n, src in enumerate(order):
            if not self.policy[src].usable(time.monotonic()):
                continue
            result = await self._whole_from(src, last=n == len(order) - 1)
            if result is not None:
                return result
        return None

    async def _whole_from(self, src: int, *, last: bool) -> DownloadResult | None:
        """The whole file in one request to source ``src``; None when it failed (the
        ``.part`` dropped, the source charged)."""
        size = self.expected.size
        assert size is not None
        try:
            self._open_part(os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        except OSError as exc:
            raise disk_error(exc, self.dest) from exc
        # With the file's SHA256 known, that one hash checks every byte of this single
        # request, so the worker skips the blake3 blocks (one hash per byte, not two).
        # A mismatch then goes to the ranged path, where the blocks find the bad bytes.
        verify_by_sha = bool(self.expected.sha256)
        task = self._task(0, size, src, sha256=True, blocks=not verify_by_sha, report_head=True)
        link = self.links[src]
        self.policy = self.policy.started(src)
        t0 = time.monotonic()
        try:
            outcome, handle = await fetch_once(
                self.shared,
                task,
                on_progress=self._on_progress,
                handles=self.handles,
                # a mirror's validators are its own: the file's (and a resume's) are
                # the URL's
                on_head=self._whole_head if src == 0 else link.learn,
                on_cancel=self._keep_whole_prefix if src == 0 else lambda h: None,
            )
        except asyncio.CancelledError:
            raise  # _keep_whole_prefix decided what stays
        except BaseException:
            self.policy = self.policy.ended(src, 0)
            self._drop_part()  # a few bytes at most: the rerun fetches them again
            raise
        self.received += max(0, (outcome.end or handle.position) - handle.position)
        nbytes = max(0, (outcome.end or handle.position) - task.start)
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
            self.policy = self.policy.finished(src, nbytes, time.monotonic() - t0)
            self.plan = ChunkPlan(size, size, done=[(0, size)])
            self.hasher = PrefixHasher(self.part, size)
            self.hasher.adopt(outcome.sha256)
            self.last_byte_at = time.monotonic()
            return await self._finish()
        self._drop_part()
        where = "" if src == 0 else f" from {self.policy[src].url.split('?', 1)[0]}"
        if mismatch:
            self.policy = self.policy.corrupt(src, nbytes)
            why = f"SHA256 {outcome.sha256} is not the expected one"
        elif outcome.error is not None and not outcome.retryable:
            if src == 0:
                self.policy = self.policy.ended(src, nbytes, kept=False)
                raise outcome.error
            self.policy = self.policy.refused(src, nbytes, outcome.error.message)
            why = outcome.error.message
        else:
            self.policy = self.policy.failed(src, nbytes, time.monotonic())
            why = outcome.error.message if outcome.error is not None else "incomplete answer"
        self.retries += 1
        then = "trying again by ranges" if last else "trying the next source"
        self._emit("chunk_retry", f"whole-file request{where}: {why}; {then}")
        return None

    def _whole_head(self, head: Head) -> None:
        self.etag, self.last_modified = head.etag, head.last_modified

    def _keep_whole_prefix(self, handle: TaskHandle) -> None:
        """An interrupted whole-file request keeps what it wrote, as a chunk would, when
        its answer gave validators to resume against; else the ``.part`` goes."""
        size = self.expected.size
        if size is None or not (self.etag or self.last_modified) or handle.position <= 0:
            self._drop_part()
            return
        spans = [(0, handle.position, size)]
        kept = self.recorder.partial(self.part, spans, self.digests, self.block_size)
        if not kept:
            self._drop_part()
            return
        try:
            os.ftruncate(self.fd, size)  # a resume trusts a .part of the file's size only
        except OSError:
            self._drop_part()
            return
        for c in kept:
            self.recorder.record(c)
        self.total = size  # run() saves the checkpoint, then closes the file

    async def _run_stream(self) -> DownloadResult:
        """Into a device or a FIFO: one stream, in order, no ``.part``, no resume.

        The bytes are still checked (SHA256, blake3 blocks) as they pass, so a wrong
        byte fails the download; nothing is renamed, and a failed stream is not retried
        (a reader of a FIFO has already consumed what was sent).
        """
        task = dataclasses.replace(
            self._task(0, None, sha256=True),
            path=str(self.dest),
            ranged=False,
            stream_only=True,
        )
        outcome, _ = await fetch_once(
            self.shared, task, on_progress=self._on_progress, handles=self.handles
        )
        if isinstance(outcome.error, RemoteChangedError) and self.expected.size is not None:
            raise IntegrityError(
                f"{self.url}: the server's file is not {self.expected.size} bytes "
                f"({outcome.error.message})",
                url=self.url,
                expected=self.expected.size,
            ) from outcome.error
        if outcome.error is not None:
            raise outcome.error
        size = outcome.end or 0
        self.received = size
        self.ranged = False
        if self.expected.size is not None and size != self.expected.size:
            raise IntegrityError(
                f"{self.url}: the server sent {size} bytes, expected {self.expected.size}",
                url=self.url,
                expected=self.expected.size,
                actual=size,
            )
        digest = outcome.sha256 or ""
        verified = self._check_digest(digest)
        now = time.monotonic()
        self._emit("done", f"{size} bytes in {now - self.t0:.2f} s")
        return DownloadResult(
            path=self.dest,
            size=size,
            sha256=digest,
            elapsed_s=now - self.t0,
            bytes_fetched=size,
            resumed_bytes=0,
            ranged=False,
            connections=1,
            retries=0,
            verified=verified,
        )

    def _drop_part(self) -> None:
        self.fd_closed()
        with contextlib.suppress(OSError):
            self.part.unlink()

    async def _probe(self, start: int, length: int) -> tuple[Head, TaskHandle]:
        """The first request: learn size and validators, retrying like any chunk."""
        # From byte 0, the request may well be the whole file (every small file): the
        # worker then hashes it as it streams.
        whole = start == 0 and (self.total is None or length >= self.total)
        return await probe(
            self.shared,
            self._task(start, start + length, probe=True, sha256=whole),
            on_progress=self._on_progress,
            on_retry=self._count_retry,
        )

    def _count_retry(self, message: str) -> None:
        self.retries += 1
        self._emit("chunk_retry", message)

    def _probe_length(self) -> int:
        align = self.block_size or 1
        if self.chunk_size:
            n = self.chunk_size
        elif self.total is not None:
            n = choose_chunk_size(self.total, self.shared.slots.capacity, align)
        else:
            n = 4 * MiB
        return max(1, -(-n // align) * align)

    def _auto_chunk_size(self) -> int:
        """The chunk size for the connections there are now (the total is known)."""
        assert self.total is not None
        return choose_chunk_size(self.total, self.shared.slots.capacity, self.block_size or 1)

    async def _prepare(self, head: Head, cp: Checkpoint | None) -> Chunk | None:
        """Decide from the probe's answer: plan, resume or not, space, preallocate."""
        total = head.total
        if self.expected.size is not None and total is not None and total != self.expected.size:
            raise SizeMismatchError(
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
        self.links[0].learn(head)
        self.ranged = head.ranged
        done: list[DoneChunk] = []
        if cp is not None and self.ranged and cp is self.adopted:
            done = list(cp.chunks)  # checked against the expected blocks just now
        elif (
            cp is not None and self.ranged and cp.same_remote(total, head.etag, head.last_modified)
        ):
            done = await asyncio.to_thread(revalidate, self.dest, cp)
        elif cp is not None:
            remove_checkpoint(self.dest)
        have = sum(c.end - c.start for c in done)
        self.resumed = have
        self._check_space(total - have)
        flags = os.O_RDWR | os.O_CREAT
        if not done:
            flags |= os.O_TRUNC
        self._open_part(flags)
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
        if self.digests and done:
            done = await asyncio.to_thread(split_at_blocks, self.part, done, self.block_size, total)
            # The kept heads whose bytes passed the check: their blocks stay pending
            # (the chunk there starts at the block), and those the probe did not take
            # yet are asked for no more.
            pieces = {(c.start, c.end) for c in done}
            heads = {(f, e) for f, e in unfinished_blocks(cp, self.block_size).items()}
            kept_heads = heads & pieces
            self.heads = {f: e for f, e in self.heads.items() if (f, e) in kept_heads}
        else:
            kept_heads = set()
        for c in done:
            self.recorder.record(c)
        self.hasher = PrefixHasher(self.part, total)
        size = (self.chunk_size or self._auto_chunk_size()) if self.ranged else max(1, total)
        self.plan = ChunkPlan(
            total,
            size,
            align=self.block_size or 1,
            done=[(c.start, c.end) for c in done if (c.start, c.end) not in kept_heads],
        )
        if not self.ranged:
            self._emit("progress", "the server ignores Range: falling back to one stream")
        if self.block_size:
            # (peers may come later: find_peers)
            self.order = BlockOrder.shuffled(-(-total // self.block_size), self.order_seed)
        if self.policy.partial and self.block_size and self.ranged:
            # Every node's probe asks for the first bytes: with peers, which blocks
            # come from the hub is the block order's choice, not the probe's.
            return None
        at = self.probe_start
        first = self.plan.pending_at(at)
        if first is None or head.end is None or head.end <= at:
            return None
        return self.plan.take_range(at, min(head.end, first.end))

    def _open_part(self, flags: int) -> None:
        try:
            self.fd = os.open(self.part, flags, 0o644)
        except FileNotFoundError:  # its folder is gone since this engine saw it
            self.shared.made_dirs.discard(str(self.dest.parent))
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.part, flags, 0o644)

    def _check_space(self, needed: int, *, existing: int | None = None) -> None:
        """Raise when ``needed`` more bytes (beyond the ``.part``'s) do not fit.

        The free figure is read once a second per folder and the checked downloads'
        needs are taken off it meanwhile, so many small files cost no statvfs each; a
        large one (an eighth of the free space or more) always reads it afresh.
        """
        folder = str(self.dest.parent)
        now = time.monotonic()
        seen = self.shared.free_space.get(folder)
        if seen is None or now - seen[0] > _FREE_SPACE_S or needed * 8 >= seen[1]:
            seen = (now, shutil.disk_usage(folder).free)
        free = seen[1]
        if existing is None:
            existing = self.part.stat().st_size if self.part.exists() else 0
        self.shared.free_space[folder] = (seen[0], max(0, free - max(0, needed - existing)))
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
        source: int = 0,
        *,
        probe: bool = False,
        sha256: bool = False,
        blocks: bool = True,
        report_head: bool = False,
    ) -> Task:
        head = self.heads.pop(start, start) if blocks and end is not None else start
        digests: tuple[str, ...] = ()
        if self.digests and blocks:
            bs = self.block_size
            last = len(self.digests) if end is None else -(-end // bs)
            digests = self.digests[start // bs : last]
        e = self.shared
        link = self.links[source]
        url, headers = link.target, self.headers
        peer = self.policy[source].peer
        if peer:
            # A peer gets the fleet token and none of the caller's credentials (which
            # are for the hub), wherever it is.
            headers = (
                *strip_credentials(headers, self.secret_headers),
                *self.peer_headers,
            )
        elif url != self.url and origin_of(url) != origin_of(self.url):
            # A mirror, or where a redirect led: the caller's credentials are for the URL.
            headers = tuple(strip_credentials(headers, self.secret_headers))
        etag, last_modified = self.etag, self.last_modified
        if source:
            etag, last_modified = link.etag, link.last_modified
        return Task(
            url=url,
            path=str(self.part),
            start=head,
            end=end,
            block_head=head - start,
            headers=headers,
            secret_headers=self.secret_headers,
            etag=etag,
            last_modified=last_modified,
            total=self.total,
            probe=probe,
            ranged=self.ranged,
            block_size=self.block_size,
            digests=digests,
            stall_timeout=e.stall_timeout,
            min_rate=e.min_rate,
            sha256=sha256,
            report_head=report_head or (bool(source) and not link.known),
            peer=peer,
        )

    def _emit_retry(self, message: str) -> None:
        self._emit("chunk_retry", message)

    def _on_progress(self, old: int, new: int) -> None:
        self.received += new - old
        self._tick()  # a file fetched in one request has no drive loop to tick for it

    # --- checkpoint -----------------------------------------------------------------
    def _checkpoint_value(self) -> Checkpoint:
        assert self.total is not None
        return self.recorder.value(
            self.total, self.etag, self.last_modified, self._running_prefixes()
        )

    def _running_prefixes(self) -> list[DoneChunk]:
        """What each running chunk has written into ``.part``, with the xxh3 of those
        bytes, as its worker last wrote them into the shared table
        (:mod:`accel.fetch.written`): a kill -9 keeps them, not only the finished
        chunks. A race's copy (another file) is not among them."""
        part, table = str(self.part), self.shared.pool.written
        out = []
        for h in self.handles.values():
            if h.task.path != part:
                continue
            got = table.read(h.tid)
            if got is not None and got[0] > h.task.start:
                out.append(DoneChunk(start=h.task.start, end=got[0], xxh3=got[1]))
        return out

    def _maybe_checkpoint(self) -> None:
        """Checkpoint every ``checkpoint_s`` or every 8 MiB written, one at a time."""
        if not self.ranged or self.fd < 0 or self.plan is None:
            return
        done = self.plan.done_bytes + sum(
            max(0, h.position - h.task.start) for h in self.handles.values()
        )
        if self.recorder.due(done):
            self.recorder.write_soon(self._checkpoint_value(), done)

    def _save_checkpoint_now(self) -> None:
        if not self.ranged or self.fd < 0 or self.total is None:
            return
        self.recorder.save_now(self._checkpoint_value())

    def _keep_written_prefixes(self) -> None:
        """Record the bytes each running chunk has written, so an interrupt keeps them:
        whole blocks when blocks are checked (a block's digest is checked when its last
        byte arrives), found past the last report by their digests (recorder.py)."""
        if not self.ranged or self.fd < 0 or self.plan is None:
            return
        ends = {c.id: c.end for c in self.plan.active()}
        spans = [
            (h.task.start, h.position, ends.get(cid, h.position)) for cid, h in self.handles.items()
        ]
        for c in self.recorder.partial(self.part, spans, self.digests, self.block_size):
            self.recorder.record(c)

    def _check_digest(self, digest: str) -> bool:
        """Raise on a SHA256 that is not the expected one; True when "verified".

        "Verified" only when an expected digest checked the bytes (the manifest's blocks,
        as they arrived, or the SHA256): else the file is complete, held to the server's
        validators, and the user is told so.
        """
        if self.expected.sha256 and digest != self.expected.sha256.lower():
            raise IntegrityError(
                f"{self.url}: SHA256 {digest} does not match the expected {self.expected.sha256}",
                url=self.url,
                expected=self.expected.sha256,
                actual=digest,
            )
        verified = bool(self.expected.sha256 or self.digests)
        if verified:
            self._emit("verified", f"sha256 {digest}")
        return verified

    async def _finish(self) -> DownloadResult:
        assert self.total is not None and self.hasher is not None
        digest = self.hasher.hexdigest()
        want = (self.expected.sha256 or "").lower()
        if want and digest != want and not self.digests and self.ranged:
            # No block digest says which bytes are wrong: find and refetch them.
            digest = await repair(
                self.shared, url=self.url, part=self.part, total=self.total, sha256=want,
                actual=digest, records=self.recorder.chunks, task_for=self._repair_task,
                on_progress=self._on_progress, on_event=self._emit_retry,
                on_piece=self._on_piece,
            )  # fmt: skip
            self._charge_wrong_answers()
        verified = self._check_digest(digest)
        # A checkpoint write still in its thread would land after the cleanup below and
        # leave a stale <name>.part.json beside the finished file.
        await self.recorder.drain()
        try:
            sweep = self.had_part or self.recorder.ever_wrote
            stamp_as = (digest, self.expected) if verified else None
            if self.durable or sweep:
                await asyncio.to_thread(
                    publish,
                    self.fd,
                    self.part,
                    self.dest,
                    self.durable,
                    sweep=sweep,
                    verified=stamp_as,
                )
            else:  # a rename and an unlink: cheaper than a hop to a thread and back
                publish(
                    self.fd, self.part, self.dest, False, sweep=False,
                    checkpoint=not self.no_checkpoint,
                )  # fmt: skip
        except OSError as exc:
            raise disk_error(exc, self.dest) from exc
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
            connections=self.shared.slots.peak,
            retries=self.retries,
            verify_tail_s=tail,
            verified=verified,
            sources=self.source_figures(),
        )

    def fd_closed(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _stop_everything(self) -> None:
        for h in list(self.handles.values()):
            self.shared.pool.cancel(h)

    def _close(self) -> None:
        self.fd_closed()
