"""The pool of worker processes and the message routing to them.

Owns process lifetime (spawn, READY handshake, stop, a dead worker's tasks failing with
a clear error) and routes each worker message to the :class:`TaskHandle` it belongs to.
Knows nothing about chunks or files: the supervisor decides what to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeAlias

from accel.errors import AccelError, DownloadError
from accel.fetch.messages import (
    Abort,
    Cancel,
    Done,
    Failed,
    FromWorker,
    Get,
    Go,
    Head,
    HeadSeen,
    Progress,
    Ready,
    Stop,
    Task,
    ToWorker,
    Trim,
    Trimmed,
)
from accel.fetch.written import WrittenTable, table_fd

__all__ = [
    "DEFAULT_WORKER_NICE",
    "Outcome",
    "TaskHandle",
    "WorkerPool",
    "default_workers",
    "prespawn",
]

#: how much nicer than the caller workers run by default (see ``Engine``)
DEFAULT_WORKER_NICE = 10

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: a worker process: an interpreter started for it, or a child forked by :func:`prespawn`
_Proc: TypeAlias = "subprocess.Popen[bytes] | _Forked"
#: workers started by :func:`prespawn` that no pool has adopted yet: (process, the
#: parent's end of its pipe, its nice)
_PRESPAWNED: list[tuple[_Proc, Connection, int]] = []
#: task ids, unique in the process: every pool's workers share one table of what each
#: task has written (:mod:`accel.fetch.written`), a slot per tid
_IDS = itertools.count(1)


def default_workers() -> int:
    """Worker processes when the caller names no number: one per core, at most 4."""
    return min(4, os.cpu_count() or 1)


def prespawn(n: int, *, nice: int) -> None:
    """Start ``n`` workers (without a rate limit) now, for the next pool to adopt.

    ``accel get`` calls this first thing. In a process that runs one thread, the
    workers are forked children of it: the modules a worker needs are imported once,
    here (the engine needs them too), and each child starts with them, so two workers
    cost no interpreter start and no imports (0.06 CPU-s each on two cores, paid on
    every download) and are ready a few milliseconds after the fork. Anywhere else
    (threads running: forking would copy a lock some thread holds) they are fresh
    interpreters started now, while the caller goes on importing. A worker no pool
    adopts stops when this process exits (its pipe closes).
    """
    fork = threading.active_count() == 1
    for _ in range(n):
        parent, proc = _fork_worker(nice) if fork else _popen_worker(-1, 0.0, 0.0, nice)
        _PRESPAWNED.append((proc, parent, nice))


class _Forked:
    """A forked worker, with the part of ``subprocess.Popen`` the pool uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if timeout is not None:
                with os.fdopen(os.pidfd_open(self.pid), "rb", buffering=0) as pidfd:
                    if not select.select([pidfd], [], [], timeout)[0]:
                        raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _fork_worker(nice: int) -> tuple[Connection, _Forked]:
    from accel.fetch import worker  # before the fork: the child imports nothing

    parent, child = multiprocessing.Pipe(duplex=True)
    written = table_fd()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: keep stdout, stderr, its pipe and the table; nothing else
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            keep = sorted({child.fileno(), written})
            lo = 3
            for fd in keep:
                os.closerange(lo, fd)
                lo = fd + 1
            os.closerange(lo, os.sysconf("SC_OPEN_MAX"))
            worker.serve(child.fileno(), -1, 0.0, 0.0, nice, written)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)  # serve() ends the process itself; here only after an error
    child.close()
    return parent, _Forked(pid)


def _adopt(nice: int) -> tuple[_Proc, Connection] | None:
    for i, (proc, conn, their_nice) in enumerate(_PRESPAWNED):
        if their_nice == nice:
            del _PRESPAWNED[i]
            return proc, conn
    return None


def _popen_worker(
    bucket_fd: int, rate: float, burst: float, nice: int
) -> tuple[Connection, subprocess.Popen[bytes]]:
    parent, child = multiprocessing.Pipe(duplex=True)
    written = table_fd()
    fds = [child.fileno(), written] + ([bucket_fd] if bucket_fd >= 0 else [])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [_PACKAGE_ROOT, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    argv = [
        sys.executable,
        "-c",
        "from accel.fetch.worker import main_from_argv; main_from_argv()",
        str(child.fileno()),
        str(bucket_fd),
        repr(rate),
        repr(burst),
        str(nice),
        str(written),
    ]
    try:
        proc = subprocess.Popen(argv, pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
    finally:
        child.close()
    return parent, proc


@dataclass
class Outcome:
    """How a task ended: ``end``/``xxh3`` on success, else ``error``."""

    end: int | None = None
    xxh3: str = ""
    #: SHA256 of the whole file, when this task streamed all of it (``Task.sha256``)
    sha256: str | None = None
    #: the URL that answered after redirects, when not the task's own
    url: str | None = None
    error: AccelError | None = None
    retryable: bool = False
    retry_after: float | None = None


@dataclass(eq=False)
class TaskHandle:
    """The supervisor's side of one in-flight task."""

    tid: int
    worker: _Worker
    task: Task
    position: int
    done: asyncio.Future[Outcome]
    on_head: Callable[[Head], None] | None = None
    on_trim: Callable[[int | None], None] | None = None
    on_progress: Callable[[int, int], None] | None = None


@dataclass(eq=False)
class _Worker:
    proc: Any
    conn: Connection
    load: int = 0
    alive: bool = True
    ready: asyncio.Future[None] | None = None
    handles: dict[int, TaskHandle] = field(default_factory=dict)
    #: asks whether more is waiting in the pipe: ``Connection.poll`` builds a selector
    #: each call (S1: ~2,500 calls, 0.2 CPU-s profiled of the supervisor's thread)
    poller: Any = None

    def __post_init__(self) -> None:
        self.poller = select.poll()
        self.poller.register(self.conn.fileno(), select.POLLIN)


class WorkerPool:
    """``n`` worker processes sharing one token bucket state.

    Workers are fresh interpreters (``python -c``, not ``multiprocessing`` spawn), so
    they never re-import the caller's ``__main__`` (a script without a main guard
    works) and import only what the worker needs. The pipe and the token bucket's
    shared state (a memfd holding one double, locked with ``lockf``) are inherited fds.
    """

    def __init__(self, n: int, *, rate: float | None, burst: float | None, nice: int = 0) -> None:
        self.n = n
        self.nice = nice
        self.rate = rate
        self.burst = burst
        self._bucket_fd = -1
        if rate:
            self._bucket_fd = os.memfd_create("accel-bucket", 0)
            os.ftruncate(self._bucket_fd, 8)
        self._workers: list[_Worker] = []
        #: what each running task has written (its slot of :mod:`accel.fetch.written`)
        self.written = WrittenTable(table_fd())
        self._started = False
        self._respawns: set[asyncio.Task[None]] = set()
        self._spawning: set[asyncio.Future[_Worker]] = set()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        # Return as soon as one worker is ready: the first request need not wait for the
        # slowest interpreter to start; the others join when they are ready.
        pending: set[asyncio.Future[_Worker]] = {
            asyncio.ensure_future(self._spawn()) for _ in range(self.n)
        }
        error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is None:
                    self._spawning.update(pending)
                    return
                error = error or exc
        assert error is not None
        raise error

    async def _spawn(self) -> _Worker:
        loop = asyncio.get_running_loop()
        adopted = _adopt(self.nice) if self._bucket_fd < 0 else None
        if adopted is not None:
            proc, parent = adopted
        else:
            parent, proc = await loop.run_in_executor(
                None,
                _popen_worker,
                self._bucket_fd,
                self.rate or 0.0,
                self.burst or 0.0,
                self.nice,
            )
        w = _Worker(proc, parent, ready=loop.create_future())
        self._workers.append(w)
        loop.add_reader(parent.fileno(), self._on_readable, w)
        assert w.ready is not None
        await w.ready
        return w

    def _on_readable(self, w: _Worker) -> None:
        try:
            # Called when the pipe is readable: a message (or EOF) is there; after each,
            # more only if the pipe still says so.
            while w.alive:
                msg = pickle.loads(w.conn.recv_bytes())
                try:
                    self._dispatch(w, msg)
                except Exception as exc:
                    # A callback that raises must not leave the task's handle behind
                    # (and its waiter hanging): that task fails with the error.
                    tid = getattr(msg, "tid", None)
                    h = w.handles.get(tid) if isinstance(tid, int) else None
                    if h is None:
                        raise
                    err = DownloadError(f"internal error handling a worker message: {exc!r}")
                    self._finish(h, Outcome(error=err, retryable=False))
                if not w.alive or not w.poller.poll(0):
                    return
        except (EOFError, OSError):
            self._lost(w)

    def _dispatch(self, w: _Worker, msg: FromWorker) -> None:
        if isinstance(msg, Ready):
            if w.ready is not None and not w.ready.done():
                w.ready.set_result(None)
            return
        h = w.handles.get(msg.tid)
        if h is None:
            return
        match msg:
            case Progress(_, pos):
                old = h.position
                h.position = pos
                if h.on_progress is not None:
                    h.on_progress(old, pos)
            case HeadSeen(_, head):
                if h.on_head is not None:
                    h.on_head(head)
            case Trimmed(_, new_end):
                if h.on_trim is not None:
                    h.on_trim(new_end)
            case Done(_, end, xxh3, sha256, url):
                self._finish(h, Outcome(end=end, xxh3=xxh3, sha256=sha256, url=url))
            case Failed(_, error, retryable, retry_after):
                self._finish(h, Outcome(error=error, retryable=retryable, retry_after=retry_after))

    def _finish(self, h: TaskHandle, outcome: Outcome) -> None:
        h.worker.handles.pop(h.tid, None)
        h.worker.load -= 1
        if not h.done.done():
            h.done.set_result(outcome)

    def _lost(self, w: _Worker) -> None:
        if not w.alive:
            return
        w.alive = False
        loop = asyncio.get_running_loop()
        loop.remove_reader(w.conn.fileno())
        if w.ready is not None and not w.ready.done():
            w.ready.set_exception(DownloadError("a download worker process failed to start"))
        for h in list(w.handles.values()):
            self._finish(
                h,
                Outcome(error=DownloadError(f"download worker {w.proc.pid} died"), retryable=True),
            )
        w.conn.close()
        if self._started:
            # A replacement keeps the pool at its size; a failed respawn is not fatal
            # while other workers remain.
            self._workers.remove(w)
            self._respawns.add(loop.create_task(self._respawn()))

    async def _respawn(self) -> None:
        try:
            await self._spawn()
        except AccelError:
            pass

    def submit(self, task: Task) -> TaskHandle:
        """Send ``task`` to the least loaded live worker."""
        live = [w for w in self._workers if w.alive and w.ready is not None and w.ready.done()]
        if not live:
            raise DownloadError("no download worker process is running")
        w = min(live, key=lambda w: w.load)
        tid = next(_IDS)
        loop = asyncio.get_running_loop()
        h = TaskHandle(tid, w, task, task.start, loop.create_future())
        w.handles[tid] = h
        w.load += 1
        self._send(w, Get(tid, task))
        return h

    def decide(self, h: TaskHandle, end: int | None) -> None:
        """Answer a probe: write up to ``end``, or abort when ``end`` is None."""
        self._send(h.worker, Go(h.tid, end) if end is not None else Abort(h.tid))

    def trim(self, h: TaskHandle, new_end: int) -> None:
        self._send(h.worker, Trim(h.tid, new_end))

    def cancel(self, h: TaskHandle) -> None:
        if h.tid in h.worker.handles:
            self._send(h.worker, Cancel(h.tid))
            self._finish(h, Outcome(error=DownloadError("cancelled"), retryable=False))

    @property
    def load(self) -> int:
        """Tasks sent to live workers and not yet ended (0 when the pool is idle)."""
        return sum(w.load for w in self._workers if w.alive)

    @property
    def open_handles(self) -> int:
        """Handles still routed to a worker: a leak if it stays above 0 when idle."""
        return sum(len(w.handles) for w in self._workers)

    def _send(self, w: _Worker, msg: ToWorker) -> None:
        if not w.alive:
            return
        try:
            # (what Connection.send does, without a ForkingPickler and a buffer per
            # message: the messages are plain dataclasses, and the worker's recv()
            # reads them alike)
            w.conn.send_bytes(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))
        except OSError:
            self._lost(w)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.alive]

    async def close(self) -> None:
        """Stop every worker: ask, wait a little, then terminate."""
        self._started = False
        loop = asyncio.get_running_loop()
        if self._spawning:  # workers still starting: let them finish, then stop them too
            await asyncio.gather(*self._spawning, return_exceptions=True)
            self._spawning.clear()
        for w in self._workers:
            if w.alive:
                self._send(w, Stop())
        await asyncio.gather(*(loop.run_in_executor(None, _reap, w.proc) for w in self._workers))
        for w in self._workers:
            if w.alive:
                w.alive = False
                loop.remove_reader(w.conn.fileno())
                w.conn.close()
        self._workers.clear()
        if self._bucket_fd >= 0:
            os.close(self._bucket_fd)
            self._bucket_fd = -1


def _reap(proc: _Proc) -> None:
    """Wait for a worker asked to stop; kill it if it does not within 2 s."""
    try:
        proc.wait(2.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
