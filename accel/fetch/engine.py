"""The Engine: one worker pool, one connection budget and one rate budget for many files.

Owns what downloads share: the worker processes, the number of connections (fixed, or
"auto": grown while aggregate throughput keeps growing, as against servers that cap
each connection), the token bucket of ``limit_rate`` and the retry policy. Each file is
a :class:`~accel.fetch.supervisor.FileDownload`. The engine knows files and URLs, never
models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from accel.errors import UsageError
from accel.fetch.pool import DEFAULT_WORKER_NICE, WorkerPool, default_workers
from accel.fetch.ratelimit import TokenBucket
from accel.fetch.slots import ConnectionSlots, RetryPolicy, Shared
from accel.fetch.sources import DEFAULT_MAX_CONNECTIONS
from accel.fetch.supervisor import FileDownload
from accel.fetch.tuner import Tuner, capacity_for_sources
from accel.fetch.types import DownloadResult, Expected, ProgressEvent
from accel.units import parse_rate

__all__ = ["Engine", "adownload", "download"]

_TUNE_S = 0.12


class Engine:
    """A pool of worker processes and one token bucket shared by every download it runs.

    ``download`` is safe to call concurrently for many files. Use it as an async context
    manager (or call ``aclose``) so the worker processes stop.

    Workers run ``worker_nice`` steps nicer than the caller: their copying is never the
    critical path, the caller's sequential SHA256 pass is (with fewer cores than busy
    threads, a 1 GiB file went from 0.4 s to 0.15 s between last byte and verified
    file), and on an inference node a download should yield the CPU to the service.
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        connections: int | str = "auto",
        limit_rate: float | str | None = None,
        headers: Mapping[str, str] | None = None,
        stall_timeout: float = 30.0,
        min_rate: float = 1024.0,
        max_attempts: int = 5,
        backoff_base: float = 0.25,
        backoff_cap: float = 15.0,
        checkpoint_s: float = 1.0,
        max_connections: int = 64,
        worker_nice: int = DEFAULT_WORKER_NICE,
        secret_headers: Iterable[str] = (),
    ) -> None:
        n_workers = workers if workers is not None else default_workers()
        if n_workers < 1:
            raise UsageError(f"--workers: must be at least 1, got {n_workers}")
        self.auto = connections == "auto"
        rate = parse_rate(limit_rate) if limit_rate is not None else None
        if self.auto:
            start = 4 if rate else 16
            self.max_connections = 16 if rate else max_connections
        else:
            try:
                start = int(connections)
            except (TypeError, ValueError):
                raise UsageError(
                    f"--connections: expected a number or 'auto', got {connections!r}"
                ) from None
            if start < 1:
                raise UsageError(f"--connections: must be at least 1, got {start}")
            self.max_connections = start
        self.slots = ConnectionSlots(start)
        self.headers = dict(headers or {})
        #: header names (beyond the credential list of accel.fetch.redirects) never sent
        #: to an origin a redirect chose
        self.secret_headers = frozenset(h.lower() for h in secret_headers)
        bucket = TokenBucket.for_rate(rate) if rate else None
        self.pool = WorkerPool(
            n_workers,
            rate=bucket.rate if bucket else None,
            burst=bucket.burst if bucket else None,
            nice=worker_nice,
        )
        self.shared = Shared(
            pool=self.pool,
            slots=self.slots,
            retry=RetryPolicy(max_attempts=max_attempts, base=backoff_base, cap=backoff_cap),
            stall_timeout=stall_timeout,
            min_rate=min_rate,
            checkpoint_s=checkpoint_s,
        )
        self._starting: asyncio.Future[None] | None = None
        self._tuner: asyncio.Task[None] | None = None
        self._downloads: set[FileDownload] = set()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the worker processes (done on first use anyway)."""
        # Concurrent first downloads all wait for the same start (the pool has no
        # ready worker before it ends).
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._starting)
        except BaseException:
            if self._starting.done():
                self._starting = None  # a failed start may be tried again
            raise

    async def _start(self) -> None:
        await self.pool.start()
        if self.auto and self.max_connections > self.slots.capacity:
            self._tuner = asyncio.ensure_future(self._tune())

    async def aclose(self) -> None:
        """Stop the tuner and the worker processes."""
        if self._tuner is not None:
            self._tuner.cancel()
            await asyncio.gather(self._tuner, return_exceptions=True)
            self._tuner = None
        if self._starting is not None and not self._starting.done():
            await asyncio.gather(self._starting, return_exceptions=True)
        self._starting = None
        await self.pool.close()

    async def download(
        self,
        url: str,
        dest: Path | str,
        *,
        expected: Expected | None = None,
        progress: Callable[[ProgressEvent], None] | None = None,
        chunk_size: int | None = None,
        headers: Mapping[str, str] | None = None,
        durable: bool = True,
        secret_headers: Iterable[str] = (),
        check: bool = False,
        mirrors: Sequence[str] = (),
        max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS,
        peers: Sequence[str] = (),
        peer_headers: Mapping[str, str] | None = None,
        order_seed: int | None = None,
        find_peers: Callable[[], Awaitable[Sequence[str]]] | None = None,
    ) -> DownloadResult:
        """Fetch ``url`` into ``dest``, verified, resumable; see the package docstring.

        ``mirrors`` are other URLs of the same bytes: chunks go to every source by
        measured throughput (:mod:`~accel.fetch.sources`), none is trusted (the
        expected size and digests are what make them the same file), and ``url``
        stays the source of last resort. ``max_connections_per_source`` caps the
        requests to each at once.

        ``peers`` are URLs of the same file at nodes that may hold only some of its
        blocks (they answer ``?have``; see :mod:`~accel.fetch.sources_order` for who
        fetches what). They get ``peer_headers`` (the fleet token) and never this
        download's own ``headers`` credentials; they are used only with the
        expected block digests, which check every block they send. ``order_seed``
        fixes this node's order of the blocks (random when None). ``find_peers``
        names more peer URLs as the download runs (asked at the start, then after 2,
        4, 8... s): nodes of a fleet starting at once find each other only as each
        starts. While it may still bring some, the hub is not asked for every block
        at once; after three asks that found nobody, the download goes on alone.

        Cancelling the awaiting task leaves ``<dest>.part`` and ``<dest>.part.json``
        resumable and stops all work on this file.

        ``durable=False`` skips the fsync of the data and of the directory around the
        final rename. The file is still renamed only once verified, so no process crash
        shows a half file under its final name; after a power cut it may hold unsynced
        bytes. For callers that sync many files at once (the ModelManager: one
        ``syncfs`` per version) and re-verify any file they did not sync.

        A verified file already at ``dest`` is not fetched again: its record (size,
        mtime, inode, digest: see :mod:`~accel.fetch.complete`) is trusted, or the file
        is re-hashed (always, with ``check=True``) and only blocks that differ are
        fetched.
        """
        await self.start()
        merged = {**self.headers, **(headers or {})}
        fd = FileDownload(
            self.shared,
            url,
            Path(dest),
            expected=expected,
            progress=progress,
            chunk_size=chunk_size,
            headers=merged,
            durable=durable,
            secret_headers=self.secret_headers | {h.lower() for h in secret_headers},
            check=check,
            mirrors=mirrors,
            max_connections_per_source=max_connections_per_source,
            peers=peers,
            peer_headers=peer_headers,
            order_seed=order_seed,
            find_peers=find_peers,
        )
        self._downloads.add(fd)
        try:
            return await fd.run()
        finally:
            self._downloads.discard(fd)

    async def _tune(self) -> None:
        """Feed the connection tuner (:mod:`~accel.fetch.tuner`) a window at a time; while
        downloads of several sources run, their sources' wants set the connections."""
        slots = self.slots
        start = slots.capacity
        tuner = Tuner(self.max_connections)
        last = self._total_received()
        t_last = time.monotonic()
        while True:
            await asyncio.sleep(_TUNE_S)
            now_bytes, now = self._total_received(), time.monotonic()
            rate = (now_bytes - last) / max(1e-3, now - t_last)
            last, t_last = now_bytes, now
            wanted = [d.policy.wanted(now) for d in self._downloads if len(d.policy) > 1]
            capacity = capacity_for_sources(wanted, floor=start, ceiling=self.max_connections)
            if capacity is not None:
                tuner.observe(slots.capacity, 0.0, busy=False)  # its next window settles
            elif not tuner.done:
                capacity = tuner.observe(slots.capacity, rate, busy=slots.used >= slots.capacity)
            else:
                continue
            if capacity > slots.capacity:
                slots.grow(capacity)
            else:
                slots.capacity = capacity

    def _total_received(self) -> int:
        return sum(d.received for d in self._downloads)


async def adownload(
    url: str,
    dest: Path | str,
    *,
    expected: Expected | None = None,
    limit_rate: float | str | None = None,
    workers: int | None = None,
    connections: int | str = "auto",
    chunk_size: int | None = None,
    headers: Mapping[str, str] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    secret_headers: Iterable[str] = (),
    check: bool = False,
    mirrors: Sequence[str] = (),
    max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS,
) -> DownloadResult:
    """Download one URL into ``dest`` with a private Engine; verified and resumable.

    ``secret_headers`` names headers never sent to another origin on a redirect, beyond
    the credential headers that never are (``accel.fetch.redirects``).
    """
    async with Engine(
        workers=workers,
        connections=connections,
        limit_rate=limit_rate,
        headers=headers,
        secret_headers=secret_headers,
    ) as engine:
        return await engine.download(
            url,
            dest,
            expected=expected,
            progress=progress,
            chunk_size=chunk_size,
            check=check,
            mirrors=mirrors,
            max_connections_per_source=max_connections_per_source,
        )


def download(
    url: str,
    dest: Path | str,
    *,
    expected: Expected | None = None,
    limit_rate: float | str | None = None,
    workers: int | None = None,
    connections: int | str = "auto",
    chunk_size: int | None = None,
    headers: Mapping[str, str] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    secret_headers: Iterable[str] = (),
    check: bool = False,
    mirrors: Sequence[str] = (),
    max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS,
) -> DownloadResult:
    """The blocking form of :func:`adownload`."""
    return asyncio.run(
        adownload(
            url,
            dest,
            expected=expected,
            limit_rate=limit_rate,
            workers=workers,
            connections=connections,
            chunk_size=chunk_size,
            headers=headers,
            progress=progress,
            secret_headers=secret_headers,
            check=check,
            mirrors=mirrors,
            max_connections_per_source=max_connections_per_source,
        )
    )
