"""A worker process: Range GETs streamed into the file with ``os.pwrite``.

Owns one event loop (uvloop when installed), one aiohttp connection pool and the
wire-level rules of a chunk: ``Accept-Encoding: identity`` with decompression off,
``If-Match`` and an ETag comparison on every 206, an exact ``Content-Range`` and byte
count, a minimum throughput (a trickling server is a stall), block digests (blake3)
checked as the bytes stream by, and an xxh3_128 of the chunk for the checkpoint. It
translates aiohttp and OS errors into :mod:`accel.errors` in one place (``_translate``).

It never decides what to fetch, never retries and never touches the checkpoint: the
supervisor does. It must stay lean in memory: it never imports pydantic, rich or the
rest of accel (only ``accel.errors`` and ``accel.fetch.ratelimit``), and holds at most
one read buffer per connection.

Messages (tuples over a ``multiprocessing`` pipe)::

    supervisor -> worker: ("get", Task) ("go", tid, end) ("abort", tid)
                          ("trim", tid, new_end) ("cancel", tid) ("stop",)
    worker -> supervisor: ("ready", pid) ("head", tid, Head) ("prog", tid, pos)
                          ("trim", tid, new_end | None) ("done", tid, end, xxh3_hex)
                          ("err", tid, AccelError, retryable, retry_after)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accel.errors import (
    AccelError,
    DownloadError,
    HTTPStatusError,
    InsufficientDiskSpaceError,
    IntegrityError,
    ProtocolViolationError,
    RangeNotSupportedError,
    RemoteChangedError,
    StallError,
)
from accel.fetch.ratelimit import TokenBucket

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    import aiohttp

__all__ = ["Head", "Task", "main_from_argv"]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED = re.compile(r"^bytes \*/(\d+)$")
_FATAL_STATUS = frozenset({400, 401, 403, 404, 405, 410, 451})
_PROGRESS_BYTES = 4 << 20
_PROGRESS_S = 0.25


@dataclass(frozen=True)
class Task:
    """One request: the bytes ``[start, end)`` of ``url`` into ``path`` at ``start``.

    ``probe`` marks the first request of a file: its answer's headers go to the
    supervisor (``head``) and the worker waits for ``go``/``abort`` before writing.
    ``end`` None means "until the body ends" (a single stream of unknown size).
    """

    url: str
    path: str
    start: int
    end: int | None
    headers: tuple[tuple[str, str], ...] = ()
    etag: str | None = None
    total: int | None = None
    probe: bool = False
    ranged: bool = True
    block_size: int = 0
    digests: tuple[str, ...] = ()
    stall_timeout: float = 30.0
    min_rate: float = 1024.0


@dataclass(frozen=True)
class Head:
    """What the probe learnt about the remote file."""

    status: int
    total: int | None
    etag: str | None
    last_modified: str | None
    ranged: bool
    end: int | None


class _Abort(Exception):
    """The supervisor said ``abort`` to a probe."""


class _Fail(Exception):
    def __init__(self, error: AccelError, *, retryable: bool, retry_after: float | None = None):
        super().__init__(error)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


def main_from_argv() -> None:
    """Entry point of a worker process: ``python -c ... PIPE_FD BUCKET_FD RATE BURST``."""
    import sys
    from multiprocessing.connection import Connection

    pipe_fd, bucket_fd = int(sys.argv[1]), int(sys.argv[2])
    rate, burst = float(sys.argv[3]), float(sys.argv[4])
    conn = Connection(pipe_fd)
    shared = _SharedTat(bucket_fd) if bucket_fd >= 0 and rate > 0 else None
    bucket = TokenBucket(rate, burst) if shared is not None else None
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_Worker(conn, shared, bucket).serve())


class _SharedTat:
    """The token bucket's one float, shared by every worker (memfd + ``lockf``)."""

    def __init__(self, fd: int) -> None:
        import mmap

        self.fd = fd
        self.map = mmap.mmap(fd, 8)

    def consume(self, bucket: TokenBucket, nbytes: int) -> float:
        import fcntl
        import struct

        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            (tat,) = struct.unpack_from("d", self.map, 0)
            new_tat, delay = bucket.consume(tat, time.monotonic(), nbytes)
            struct.pack_into("d", self.map, 0, new_tat)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        return delay


class _Worker:
    def __init__(
        self, conn: Connection, tat: _SharedTat | None, bucket: TokenBucket | None
    ) -> None:
        self.conn = conn
        self.tat = tat
        self.bucket = bucket
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.ends: dict[int, int | None] = {}
        self.positions: dict[int, int] = {}
        self.decisions: dict[int, asyncio.Future[int | None]] = {}
        self.stopped = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None

    async def serve(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            read_bufsize=64 * 1024,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        loop.add_reader(self.conn.fileno(), self._on_message)
        self._send(("ready", os.getpid()))
        try:
            await self.stopped.wait()
        finally:
            loop.remove_reader(self.conn.fileno())
            for t in list(self.tasks.values()):
                t.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            await self.session.close()

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, OSError):
            self.stopped.set()

    def _on_message(self) -> None:
        try:
            while self.conn.poll():
                self._handle(self.conn.recv())
        except (EOFError, OSError):
            self.stopped.set()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "get":
            tid, task = msg[1], msg[2]
            self.ends[tid] = task.end
            self.positions[tid] = task.start
            self.tasks[tid] = asyncio.ensure_future(self._run(tid, task))
        elif kind in ("go", "abort"):
            fut = self.decisions.get(msg[1])
            if fut is not None and not fut.done():
                fut.set_result(msg[2] if kind == "go" else None)
        elif kind == "trim":
            tid, new_end = msg[1], msg[2]
            end = self.ends.get(tid)
            pos = self.positions.get(tid)
            if tid in self.tasks and end is not None and pos is not None and pos < new_end < end:
                self.ends[tid] = new_end
                self._send(("trim", tid, new_end))
            else:
                self._send(("trim", tid, None))
        elif kind == "cancel":
            t = self.tasks.get(msg[1])
            if t is not None:
                t.cancel()
        elif kind == "stop":
            self.stopped.set()

    async def _run(self, tid: int, task: Task) -> None:
        try:
            end, digest = await self._fetch(tid, task)
        except asyncio.CancelledError:
            return
        except _Abort:
            self._send(("done", tid, None, ""))
        except _Fail as f:
            self._send(("err", tid, f.error, f.retryable, f.retry_after))
        except Exception as exc:  # one seam: every foreign error is translated here
            tr = _translate(exc, task)
            self._send(("err", tid, tr.error, tr.retryable, tr.retry_after))
        else:
            self._send(("done", tid, end, digest))
        finally:
            self.tasks.pop(tid, None)
            self.ends.pop(tid, None)
            self.positions.pop(tid, None)
            self.decisions.pop(tid, None)

    async def _fetch(self, tid: int, task: Task) -> tuple[int, str]:
        import aiohttp
        import xxhash

        assert self.session is not None
        headers = dict(task.headers)
        headers["Accept-Encoding"] = "identity"
        if task.ranged and task.end is not None:
            headers["Range"] = f"bytes={task.start}-{task.end - 1}"
        if task.etag and not task.etag.startswith("W/"):
            headers["If-Match"] = task.etag
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=task.stall_timeout, sock_read=task.stall_timeout
        )
        async with self.session.get(task.url, headers=headers, timeout=timeout) as resp:
            start = task.start
            head = _check_response(resp, task)
            if task.probe:
                fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
                self.decisions[tid] = fut
                self._send(("head", tid, head))
                decided = await fut
                if decided is None:
                    raise _Abort()
                self.ends[tid] = decided if head.end is not None else None
            fd = os.open(task.path, os.O_WRONLY)
            try:
                pos = await self._stream(tid, task, resp, fd, start, xxhash.xxh3_128())
            finally:
                os.close(fd)
            return pos

    async def _stream(
        self, tid: int, task: Task, resp: aiohttp.ClientResponse, fd: int, start: int, xxh: Any
    ) -> tuple[int, str]:
        import blake3

        pos = start
        reported = pos
        last_report = window_start = time.monotonic()
        window_bytes = 0
        block_size = task.block_size
        digests = task.digests
        block_hasher = blake3.blake3() if digests else None
        block_index = 0
        block_fill = 0
        pwrite = os.pwrite
        content = resp.content
        while True:
            end = self.ends.get(tid)
            if end is not None and pos >= end:
                break
            data = await content.readany()
            if not data:
                break
            n = len(data)
            end = self.ends.get(tid)  # a split may have moved it while we waited
            if end is not None and pos + n > end:
                if end == task.end and not task.probe:
                    raise _Fail(
                        ProtocolViolationError(
                            f"{task.url}: the server sent more bytes than the range asked for",
                            url=task.url,
                        ),
                        retryable=True,
                    )
                data = data[: end - pos]  # trimmed by a split: the rest is another chunk's
                n = len(data)
            view = memoryview(data)
            off = 0
            while off < n:
                off += pwrite(fd, view[off:], pos + off)
            xxh.update(data)
            if block_hasher is not None:
                block_index, block_fill = _check_blocks(
                    block_hasher, view, digests, block_size, block_index, block_fill, task, pos
                )
            pos += n
            self.positions[tid] = pos
            window_bytes += n
            if self.bucket is not None:
                # Pay for these bytes before reading more: the socket stays unread and
                # TCP slows the sender; the debt is shared by every worker.
                delay = self._throttle(n)
                if delay > 0:
                    await asyncio.sleep(delay)
                    window_start += delay
            now = time.monotonic()
            if now - window_start >= task.stall_timeout:
                if window_bytes < task.min_rate * (now - window_start):
                    raise _Fail(
                        StallError(
                            f"{task.url}: less than {task.min_rate:.0f} B/s for "
                            f"{task.stall_timeout:.0f} s",
                            url=task.url,
                        ),
                        retryable=True,
                    )
                window_start, window_bytes = now, 0
            if pos - reported >= _PROGRESS_BYTES or now - last_report >= _PROGRESS_S:
                self._send(("prog", tid, pos))
                reported, last_report = pos, now
        end = self.ends.get(tid)
        if end is not None and pos != end:
            raise _Fail(
                ProtocolViolationError(
                    f"{task.url}: body ended after {pos - start} of {end - start} bytes",
                    url=task.url,
                    received=pos - start,
                    expected=end - start,
                ),
                retryable=True,
            )
        if block_hasher is not None and block_fill:
            _finish_block(block_hasher, digests, block_index, task, pos)
        return pos, xxh.hexdigest()

    def _throttle(self, n: int) -> float:
        assert self.bucket is not None and self.tat is not None
        return self.tat.consume(self.bucket, n)


def _check_blocks(
    hasher: Any,
    view: memoryview,
    digests: tuple[str, ...],
    block_size: int,
    index: int,
    fill: int,
    task: Task,
    pos: int,
) -> tuple[int, int]:
    off = 0
    n = len(view)
    while off < n:
        take = min(n - off, block_size - fill)
        hasher.update(view[off : off + take])
        off += take
        fill += take
        if fill == block_size:
            _finish_block(hasher, digests, index, task, pos + off)
            index += 1
            fill = 0
    return index, fill


def _finish_block(hasher: Any, digests: tuple[str, ...], index: int, task: Task, pos: int) -> None:
    got = hasher.hexdigest()
    hasher.reset()
    if index < len(digests) and got != digests[index]:
        raise _Fail(
            IntegrityError(
                f"{task.url}: block ending at byte {pos} does not match its blake3 digest",
                url=task.url,
                offset=pos,
            ),
            retryable=True,
        )


def _check_response(resp: aiohttp.ClientResponse, task: Task) -> Head:
    """Accept the status and headers of a chunk answer, or raise ``_Fail``."""
    status = resp.status
    url = task.url
    etag = resp.headers.get("ETag")
    last_modified = resp.headers.get("Last-Modified")
    encoding = resp.headers.get("Content-Encoding", "identity").lower()
    if status in (200, 206) and encoding not in ("identity", ""):
        raise _Fail(
            ProtocolViolationError(f"{url}: answered with Content-Encoding {encoding}", url=url),
            retryable=True,
        )
    length = resp.content_length
    if status == 206:
        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if m is None:
            raise _Fail(
                ProtocolViolationError(f"{url}: 206 without a usable Content-Range", url=url),
                retryable=True,
            )
        first, last = int(m.group(1)), int(m.group(2))
        total = None if m.group(3) == "*" else int(m.group(3))
        want_last = (task.end - 1) if task.end is not None else None
        if first != task.start or (
            not task.probe
            and (last != want_last or (task.total is not None and total != task.total))
        ):
            raise _Fail(
                ProtocolViolationError(
                    f"{url}: asked for bytes {task.start}-{want_last}, got "
                    f"{resp.headers.get('Content-Range')}",
                    url=url,
                ),
                retryable=True,
            )
        if length is not None and length != last - first + 1:
            raise _Fail(
                ProtocolViolationError(
                    f"{url}: Content-Length {length} disagrees with Content-Range", url=url
                ),
                retryable=True,
            )
        if task.etag and etag and etag != task.etag:
            raise _Fail(
                RemoteChangedError(f"{url}: ETag changed from {task.etag} to {etag}", url=url),
                retryable=False,
            )
        return Head(206, total, etag, last_modified, True, last + 1)
    if status == 200:
        if task.probe:
            return Head(200, length, etag, last_modified, False, length)
        if task.ranged:
            # One node of a fleet may ignore Range once; the retry asks again.
            raise _Fail(
                RangeNotSupportedError(f"{url}: the server ignored Range (200)", url=url),
                retryable=True,
            )
        if task.total is not None and length is not None and length != task.total:
            raise _Fail(
                RemoteChangedError(f"{url}: size changed to {length}", url=url), retryable=False
            )
        return Head(200, length, etag, last_modified, False, length)
    if status == 416 and task.probe:
        m = _UNSATISFIED.match(resp.headers.get("Content-Range", ""))
        if m is not None and int(m.group(1)) == 0:
            return Head(206, 0, etag, last_modified, True, 0)
    if status in (412, 416):
        raise _Fail(
            RemoteChangedError(
                f"{url}: the remote file changed (HTTP {status})", url=url, status=status
            ),
            retryable=False,
        )
    retry_after = _retry_after(resp.headers.get("Retry-After"))
    err = HTTPStatusError(
        f"{url}: HTTP {status} {resp.reason or ''}".rstrip(),
        url=url,
        status=status,
        hint=_status_hint(status),
    )
    raise _Fail(err, retryable=status not in _FATAL_STATUS, retry_after=retry_after)


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "the server refused access: pass a token with --header 'Authorization: Bearer T'"
    if status in (404, 410):
        return "check the URL: the server has no such file"
    return "the server is failing; rerun later: finished chunks are kept"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _translate(exc: BaseException, task: Task) -> _Fail:
    """The one place where aiohttp and OS errors become accel errors."""
    import aiohttp

    url = task.url
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _Fail(
            InsufficientDiskSpaceError(
                f"no space left while writing {task.path}", path=task.path, needed=None, free=0
            ),
            retryable=False,
        )
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return _Fail(
            StallError(f"{url}: no bytes for {task.stall_timeout:.0f} s", url=url),
            retryable=True,
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _Fail(ProtocolViolationError(f"{url}: broken body: {exc}", url=url), retryable=True)
    if isinstance(exc, aiohttp.ClientError):
        return _Fail(DownloadError(f"{url}: {type(exc).__name__}: {exc}", url=url), retryable=True)
    if isinstance(exc, OSError):
        return _Fail(
            DownloadError(f"{task.path}: {exc.strerror or exc}", path=task.path),
            retryable=False,
        )
    return _Fail(DownloadError(f"{url}: {type(exc).__name__}: {exc}", url=url), retryable=False)
