"""A worker process: Range GETs on plain sockets, streamed into the file with ``os.pwrite``.

Each task (one Range request) runs in a thread of the worker's pool with its own buffer, over the
lean HTTP/1.1 client of :mod:`accel.fetch.http1` (keep-alive connections shared by the
process's threads). Reads, writes and hashing release the GIL, so one process drives
dozens of connections; the main thread only dispatches the supervisor's messages. The
wire-level rules of a chunk live here: ``Accept-Encoding: identity``, ``If-Match`` and an
ETag comparison on every 206, redirects followed (no credential header leaves for
another origin), an exact ``Content-Range`` and byte count, a minimum throughput (a
trickling server is a stall), block digests (blake3) checked as the bytes stream by, and
an xxh3_128 of the chunk for the checkpoint. Foreign errors become :mod:`accel.errors`
in one place (``_translate``).

It never decides what to fetch, never retries and never touches the checkpoint: the
supervisor does. It stays lean in memory: it imports neither aiohttp, pydantic nor rich
(only ``accel.errors`` and the standard-library modules of ``accel.fetch``: ``http1``,
``messages``, ``ratelimit``, ``redirects``), and holds
one 256 KiB buffer per running task.

Messages over the ``multiprocessing`` pipe are the typed values of
:mod:`accel.fetch.messages`, shared with the pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pickle
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin

from accel.errors import (
    DownloadError,
    HTTPStatusError,
    InsufficientDiskSpaceError,
    IntegrityError,
    ProtocolViolationError,
    StallError,
)
from accel.fetch.answers import Fail, check_response, strong_etag
from accel.fetch.http1 import (
    ConnectionPool,
    NoResponse,
    ProtocolError,
    Response,
    StallTimeout,
    origin_of,
    read_response,
    request_target,
)
from accel.fetch.messages import (
    Abort,
    Cancel,
    Done,
    Failed,
    FromWorker,
    Get,
    Go,
    HeadSeen,
    Progress,
    Ready,
    Stop,
    Task,
    ToWorker,
    Trim,
    Trimmed,
)
from accel.fetch.ratelimit import TokenBucket
from accel.fetch.redirects import strip_credentials
from accel.fetch.written import WrittenTable

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from accel.fetch.http1 import Connection as HTTPConnection

__all__ = ["main_from_argv", "serve"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
_PROGRESS_BYTES = 1 << 20
_PROGRESS_S = 0.1
_BUF = 256 * 1024
#: reads are this small under a rate limit, so the shared bucket paces them smoothly
_THROTTLED_READ = 64 * 1024
_USER_AGENT = "accel/0.1"
#: Bytes per pwrite. The page cache sizes its folios by the write: a 256 KiB write asks
#: for large folios, which come from the high-order free blocks a VM with free page
#: reporting has handed back to its host, so every page of them faults in on the host
#: while the writer holds the inode lock and the other writers spin on it. Measured on
#: this 2-core VM (page_reporting_order=11), 1 GiB into ext4 with 8 connections, the
#: page cache idle for 15 s before: 6.35 s wall and 7.4 s of system CPU in 256 KiB
#: writes, 3.80 s in 32 KiB, 1.92 s in 16 KiB; with the memory just used (warm): 1.65 s
#: and 1.59 s. 16 KiB folios come from the per-CPU lists of recently freed pages.
_WRITE = 16 * 1024


class _Decision(NamedTuple):
    """The supervisor's answer to a probe: write (up to ``end``; None: to the end) or not."""

    go: bool
    end: int | None


class _Abort(Exception):
    """The supervisor said ``abort`` to a probe."""


class _Cancelled(Exception):
    """The supervisor cancelled the task (or the worker is stopping)."""


def main_from_argv() -> None:
    """Entry point of a worker process:
    ``python -c ... PIPE_FD BUCKET_FD RATE BURST NICE WRITTEN_FD``."""
    import sys

    a = sys.argv
    serve(int(a[1]), int(a[2]), float(a[3]), float(a[4]), int(a[5]), int(a[6]))


def serve(
    pipe_fd: int, bucket_fd: int, rate: float, burst: float, nice: int, written_fd: int
) -> None:
    """Serve the supervisor on ``pipe_fd`` until it says stop or goes away; never returns.

    The body of a worker process, whether a fresh interpreter (:func:`main_from_argv`)
    or a child forked by :func:`accel.fetch.pool.prespawn`.
    """
    import signal
    from multiprocessing.connection import Connection

    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    # Ctrl-C and systemd's stop signal the whole process group: the supervisor decides
    # (it records what each task wrote, then says Stop); a worker dying first would take
    # its tasks' positions with it. A supervisor that dies closes the pipe: we end then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(pipe_fd)
    shared = _SharedTat(bucket_fd) if bucket_fd >= 0 and rate > 0 else None
    bucket = TokenBucket(rate, burst) if shared is not None else None
    written = WrittenTable(written_fd) if written_fd >= 0 else None
    with contextlib.suppress(KeyboardInterrupt):
        _Worker(conn, shared, bucket, written).serve()
    # Do not wait for a task thread stuck in a write to a hung disk: the supervisor is
    # gone or said stop, and every file descriptor is the kernel's to close.
    os._exit(0)


class _SharedTat:
    """The token bucket's one float, shared by every worker (memfd + ``lockf``)."""

    def __init__(self, fd: int) -> None:
        import mmap

        self.fd = fd
        self.map = mmap.mmap(fd, 8)
        self.lock = threading.Lock()  # lockf locks belong to the process, not the thread

    def consume(self, bucket: TokenBucket, nbytes: int) -> float:
        import fcntl
        import struct

        with self.lock:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                (tat,) = struct.unpack_from("d", self.map, 0)
                new_tat, delay = bucket.consume(tat, time.monotonic(), nbytes)
                struct.pack_into("d", self.map, 0, new_tat)
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)
        return delay


class _Run:
    """One task's state, shared by its thread and the message loop (under ``lock``)."""

    def __init__(self, tid: int, task: Task) -> None:
        self.tid = tid
        self.task = task
        self.end = task.end
        self.pos = task.start
        self.decision: Future[_Decision] = Future()
        self.cancelled = False
        self.conn: HTTPConnection | None = None
        self.wake = threading.Event()
        self.future: Future[None] | None = None
        #: where redirects led, when not ``task.url``
        self.final_url: str | None = None

    def cancel(self) -> None:
        self.cancelled = True
        self.wake.set()
        if not self.decision.done():
            self.decision.set_result(_Decision(False, None))
        conn = self.conn
        if conn is not None:
            conn.abort()


class _Worker:
    def __init__(
        self,
        conn: Connection,
        tat: _SharedTat | None,
        bucket: TokenBucket | None,
        written: WrittenTable | None = None,
    ) -> None:
        self.conn = conn
        self.written = written
        self.tat = tat
        self.bucket = bucket
        self.runs: dict[int, _Run] = {}
        self.lock = threading.Lock()  # positions and ends of every run; message order
        self.send_lock = threading.Lock()
        self.http = ConnectionPool()
        # Threads are reused across tasks: no thread start per chunk of a small file.
        self.threads = ThreadPoolExecutor(max_workers=128, thread_name_prefix="task")
        self.stopped = threading.Event()

    def serve(self) -> None:
        self._send(Ready(os.getpid()))
        try:
            while not self.stopped.is_set():
                try:
                    msg = pickle.loads(self.conn.recv_bytes())
                except (EOFError, OSError):
                    break  # the supervisor is gone
                self._handle(msg)
        finally:
            self.stopped.set()
            runs = list(self.runs.values())
            for run in runs:
                run.cancel()
            if runs:
                wait([r.future for r in runs if r.future is not None], timeout=1.0)
            self.threads.shutdown(wait=False, cancel_futures=True)
            self.http.close()

    def _send(self, msg: FromWorker) -> None:
        data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)  # outside the lock
        try:
            with self.send_lock:
                self.conn.send_bytes(data)
        except (BrokenPipeError, OSError):
            self.stopped.set()

    def _handle(self, msg: ToWorker) -> None:
        match msg:
            case Get(tid, task):
                new = _Run(tid, task)
                self.runs[tid] = new
                new.future = self.threads.submit(self._run, new)
            case Go(tid, end):
                self._decide(tid, end, go=True)
            case Abort(tid):
                self._decide(tid, None, go=False)
            case Trim(tid, new_end):
                # Under the lock, and acknowledged before releasing it: the task's thread
                # takes bytes under the same lock, so its "done" can never precede the
                # ack nor cover bytes past the new end.
                with self.lock:
                    run = self.runs.get(tid)
                    if run is not None and run.end is not None and run.pos < new_end < run.end:
                        run.end = new_end
                        self._send(Trimmed(tid, new_end))
                    else:
                        self._send(Trimmed(tid, None))
            case Cancel(tid):
                run = self.runs.get(tid)
                if run is not None:
                    run.cancel()
            case Stop():
                self.stopped.set()

    def _decide(self, tid: int, end: int | None, *, go: bool) -> None:
        run = self.runs.get(tid)
        if run is not None and not run.decision.done():
            run.decision.set_result(_Decision(go, end))

    def _run(self, run: _Run) -> None:
        tid, task = run.tid, run.task
        try:
            end, digest, sha = self._fetch(run)
        except _Cancelled:
            return
        except _Abort:
            self._send(Done(tid, None))
        except Fail as f:
            if not run.cancelled:
                self._send(Failed(tid, f.error, f.retryable, f.retry_after))
        except Exception as exc:  # one seam: every foreign error is translated here
            if not run.cancelled:
                tr = _translate(exc, task)
                self._send(Failed(tid, tr.error, tr.retryable, tr.retry_after))
        else:
            self._send(Done(tid, end, digest, sha, run.final_url))
        finally:
            self.runs.pop(tid, None)
            if run.conn is not None:
                run.conn.close()

    # --- one request ---------------------------------------------------------------
    def _request(self, run: _Run, url: str, headers: list[tuple[str, str]]) -> Response:
        """Send a GET and read the answer's head; one retry on a stale keep-alive."""
        task = run.task
        origin = origin_of(url)
        lines = [
            f"GET {request_target(url)} HTTP/1.1",
            f"Host: {origin.host_header}",
            f"User-Agent: {_USER_AGENT}",
        ]
        lines += [f"{k}: {v}" for k, v in headers]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        while True:
            if run.cancelled:
                raise _Cancelled()
            conn = self.http.get(origin, task.stall_timeout)
            run.conn = conn
            if run.cancelled:
                conn.abort()
            try:
                conn.send(payload)
                return read_response(conn)
            except (NoResponse, ConnectionResetError, BrokenPipeError):
                conn.close()
                run.conn = None
                if run.cancelled:
                    raise _Cancelled() from None
                if not conn.reused:
                    raise
                # The server closed an idle keep-alive connection: try a fresh one.

    def _fetch(self, run: _Run) -> tuple[int, str, str | None]:
        import xxhash

        task = run.task
        headers = [(k, v) for k, v in task.headers if k.lower() != "accept-encoding"]
        headers.append(("Accept-Encoding", "identity"))
        if task.ranged and task.end is not None:
            headers.append(("Range", f"bytes={task.start}-{task.end - 1}"))
        if strong_etag(task.etag):
            headers.append(("If-Match", task.etag or ""))
        elif task.last_modified and not task.probe:
            # No strong ETag: the date the server gave is the validator. A file replaced
            # since is a 412 (If-Unmodified-Since), or a 200 with the new file from a
            # server that only knows If-Range, never bytes of two files under one 206.
            headers.append(("If-Unmodified-Since", task.last_modified))
            if task.ranged:
                headers.append(("If-Range", task.last_modified))
        for k, v in headers:
            if any(c in k or c in v for c in "\r\n\0"):
                raise Fail(DownloadError(f"header {k!r} contains a line break"), retryable=False)
        url = task.url
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._request(run, url, headers)
            location = resp.headers.get("location")
            if resp.status not in _REDIRECTS or not location:
                break
            assert run.conn is not None
            run.conn.close()
            run.conn = None
            nxt = urljoin(url, location)
            if origin_of(nxt) != origin_of(url):
                # The server chose this origin, not the user: no credential goes there.
                headers = strip_credentials(headers, task.secret_headers)
            url = nxt
        else:
            raise Fail(
                DownloadError(f"{task.url}: more than {_MAX_REDIRECTS} redirects", url=task.url),
                retryable=False,
            )
        if resp.status == 404 and task.peer:
            _raise_if_not_held(resp, task)
        head = check_response(resp.status, resp.reason, resp.headers, resp.content_length, task)
        if url != task.url:
            run.final_url = url
            head = dataclasses.replace(head, url=url)
        if task.probe:
            self._send(HeadSeen(run.tid, head))
            decided = run.decision.result()
            if run.cancelled:
                raise _Cancelled()
            if not decided.go:
                raise _Abort()
            with self.lock:
                run.end = decided.end if head.end is not None else None
        elif task.report_head:
            self._send(HeadSeen(run.tid, head))  # the validators, for a resume; no wait
        fd = _open_target(task)
        try:
            total = head.total if head.total is not None else task.total
            result = self._stream(run, resp, fd, xxhash.xxh3_128(), total)
        finally:
            os.close(fd)
        resp.body.release(self.http)
        run.conn = None
        return result

    def _stream(
        self, run: _Run, resp: Response, fd: int, xxh: Any, total: int | None
    ) -> tuple[int, str, str | None]:
        import blake3

        task = run.task
        tid = run.tid
        start = pos = task.start
        reported = pos
        last_report = window_start = time.monotonic()
        window_bytes = 0
        digests = task.digests
        block_hasher = blake3.blake3() if digests else None
        block_index = 0
        block_fill = _seed_block(block_hasher, task) if block_hasher is not None else 0
        sha = hashlib.sha256() if task.sha256 and task.start == 0 else None
        pwrite = os.pwrite
        stream_only = task.stream_only
        body = resp.body
        buf = bytearray(_THROTTLED_READ if self.bucket is not None else _BUF)
        whole = memoryview(buf)
        lock = self.lock
        written = self.written
        while True:
            end = run.end
            if end is not None and pos >= end:
                break
            want = len(buf) if end is None else min(len(buf), end - pos)
            n = body.readinto(whole[:want])
            if run.cancelled:
                raise _Cancelled()
            if n == 0:
                break
            with lock:
                end = run.end  # a split may have moved it while we read
                if end is not None and pos + n > end:
                    if end == task.end and not task.probe:
                        raise Fail(
                            ProtocolViolationError(
                                f"{task.url}: the server sent more bytes than the range asked for",
                                url=task.url,
                            ),
                            retryable=True,
                        )
                    n = end - pos  # trimmed by a split: the rest is another chunk's
                run.pos = pos + n
            view = whole[:n]
            try:
                off = 0
                if stream_only:  # a device or a FIFO: in order, no offsets
                    while off < n:
                        off += os.write(fd, view[off:])
                while off < n:  # in _WRITE pieces: see there
                    off += pwrite(fd, view[off : off + _WRITE], pos + off)
            except OSError as exc:
                raise _file_error(exc, task) from exc
            xxh.update(view)
            if sha is not None:
                sha.update(view)
            if block_hasher is not None:
                block_index, block_fill = _check_blocks(
                    block_hasher, view, digests, task.block_size, block_index, block_fill,
                    task, pos,
                )  # fmt: skip
            pos += n
            if written is not None:
                # after the block check: a block that failed it is never claimed
                written.write(tid, pos, xxh.digest())
            window_bytes += n
            if self.bucket is not None:
                # Pay for these bytes before reading more: the socket stays unread and
                # TCP slows the sender; the debt is shared by every worker.
                delay = self._throttle(n)
                if delay > 0:
                    run.wake.wait(delay)
                    window_start += delay
                    if run.cancelled:
                        raise _Cancelled()
            now = time.monotonic()
            if now - window_start >= task.stall_timeout:
                if window_bytes < task.min_rate * (now - window_start):
                    raise Fail(
                        StallError(
                            f"{task.url}: less than {task.min_rate:.0f} B/s for "
                            f"{task.stall_timeout:.0f} s",
                            url=task.url,
                        ),
                        retryable=True,
                    )
                window_start, window_bytes = now, 0
            if pos - reported >= _PROGRESS_BYTES or now - last_report >= _PROGRESS_S:
                self._send(Progress(tid, pos))
                reported, last_report = pos, now
        end = run.end
        if end is not None and pos != end:
            raise Fail(
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
        # The file's SHA256 only if this task streamed all of it (a split may cut it short).
        whole_sha = (
            sha.hexdigest()
            if sha is not None and (pos == total or (total is None and task.stream_only))
            else None
        )
        return pos, xxh.hexdigest(), whole_sha

    def _throttle(self, n: int) -> float:
        assert self.bucket is not None and self.tat is not None
        return self.tat.consume(self.bucket, n)


#: the longest error body read to find a peer's problem code
_PROBLEM_BYTES = 4096


def _raise_if_not_held(resp: Response, task: Task) -> None:
    """A peer's ``404`` whose problem code is ``block_not_held``: raise it as such (a
    retry elsewhere, no verdict on the peer); any other 404 goes on as a 404."""
    if "json" not in resp.headers.get("content-type", ""):
        return
    length = resp.content_length
    if length is None or length > _PROBLEM_BYTES:
        return
    buf = bytearray(length)
    view = memoryview(buf)
    got = 0
    while got < length and (n := resp.body.readinto(view[got:])):
        got += n
    try:
        code = json.loads(bytes(buf[:got]))["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return
    if code == "block_not_held":
        raise Fail(
            HTTPStatusError(
                f"{task.url}: HTTP 404 block_not_held (the peer lacks a block of "
                f"bytes {task.start}-{(task.end or 0) - 1})",
                url=task.url,
                status=404,
                problem="block_not_held",
            ),
            retryable=True,
        )


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
        raise Fail(
            IntegrityError(
                f"{task.url}: block ending at byte {pos} does not match its blake3 digest",
                url=task.url,
                offset=pos,
            ),
            retryable=True,
        )


def _seed_block(hasher: Any, task: Task) -> int:
    """Hash the first block's bytes before ``task.start`` (``task.block_head`` of them,
    kept from an interrupted run); returns how many are in the block already."""
    n = task.block_head
    if n <= 0:
        return 0
    try:
        fd = os.open(task.path, os.O_RDONLY)
        try:
            data = os.pread(fd, n, task.start - n)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _file_error(exc, task) from exc
    if len(data) != n:
        raise Fail(DownloadError(f"{task.path} is shorter than expected"), retryable=True)
    hasher.update(data)
    return n


def _open_target(task: Task) -> int:
    """The file a task writes into; a FIFO nobody reads is an error, not a hang."""
    flags = os.O_WRONLY
    if task.stream_only:
        flags |= os.O_NONBLOCK
    try:
        fd = os.open(task.path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise Fail(
                DownloadError(
                    f"{task.path}: no process is reading this FIFO",
                    path=task.path,
                    hint="start the reader first (e.g. 'sha256sum < FIFO &'), then rerun",
                ),
                retryable=False,
            ) from exc
        raise _file_error(exc, task) from exc
    if task.stream_only:
        os.set_blocking(fd, True)
    return fd


def _file_error(exc: OSError, task: Task) -> Fail:
    """An error of the local file (open, pwrite): never retried by the supervisor."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Fail(
            InsufficientDiskSpaceError(
                f"no space left while writing {task.path}", path=task.path, needed=None, free=0
            ),
            retryable=False,
        )
    return Fail(
        DownloadError(f"{task.path}: {exc.strerror or exc}", path=task.path), retryable=False
    )


def _translate(exc: BaseException, task: Task) -> Fail:
    """The one place where socket, TLS and parser errors become accel errors."""
    url = task.url
    if isinstance(exc, StallTimeout | TimeoutError):
        return Fail(
            StallError(f"{url}: no bytes for {task.stall_timeout:.0f} s", url=url),
            retryable=True,
        )
    if isinstance(exc, ProtocolError):
        return Fail(ProtocolViolationError(f"{url}: {exc}", url=url), retryable=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Fail(
            DownloadError(
                f"{url}: TLS certificate not trusted: {exc.verify_message}",
                url=url,
                hint="check the host name, or install the CA that signed the server's certificate",
            ),
            retryable=False,
        )
    if isinstance(exc, ValueError):
        return Fail(DownloadError(f"{url}: {exc}", url=url), retryable=False)
    if isinstance(exc, OSError):
        # Connect, reset, refused, DNS, TLS: the network's, so worth a retry.
        what = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, ConnectionRefusedError):
            # not "finished chunks are kept": nothing was fetched, nothing listens there
            host = urllib.parse.urlsplit(url).netloc
            hint = f"nothing listens at {host}: check the URL, and that the server is running"
            return Fail(DownloadError(f"{url}: {what}", url=url, hint=hint), retryable=True)
        return Fail(DownloadError(f"{url}: {what}", url=url), retryable=True)
    return Fail(DownloadError(f"{url}: {type(exc).__name__}: {exc}", url=url), retryable=False)
