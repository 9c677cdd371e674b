"""Every value that crosses the pipe between the supervisor and a worker process.

One small immutable type per message kind, imported by both ends (``pool.py`` and
``worker.py``), so mypy checks the sender and the reader of each field: a message can no
longer be one element short of what its reader indexes. ``NamedTuple`` rather than a
dataclass: these are pickled on every progress report (about ten a second per running
task), and a NamedTuple pickles as its class and a plain tuple.

The worker imports this module, so it stays as lean as the worker must be: standard
library only (no pydantic, no aiohttp), apart from the error types it carries.

Supervisor -> worker: :class:`Get` (a task), :class:`Go` / :class:`Abort` (the answer to
a probe's head), :class:`Trim` (move a running task's end back), :class:`Cancel`,
:class:`Stop`. Worker -> supervisor: :class:`Ready`, :class:`HeadSeen`,
:class:`Progress`, :class:`Trimmed`, :class:`Done`, :class:`Failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from accel.errors import AccelError

__all__ = [
    "Abort",
    "Cancel",
    "Done",
    "Failed",
    "FromWorker",
    "Get",
    "Go",
    "Head",
    "HeadSeen",
    "Progress",
    "Ready",
    "Stop",
    "Task",
    "ToWorker",
    "Trim",
    "Trimmed",
]


@dataclass(frozen=True)
class Task:
    """One request: the bytes ``[start, end)`` of ``url`` into ``path`` at ``start``.

    ``probe`` marks the first request of a file: its answer's headers go to the
    supervisor (:class:`HeadSeen`) and the worker waits for :class:`Go` or
    :class:`Abort` before writing. ``end`` None means "until the body ends" (a single
    stream of unknown size).
    """

    url: str
    path: str
    start: int
    end: int | None
    headers: tuple[tuple[str, str], ...] = ()
    etag: str | None = None
    #: the validator used when the server gave no strong ETag: every answer must carry
    #: this same Last-Modified (sent as If-Unmodified-Since, so a replaced file is 412)
    last_modified: str | None = None
    total: int | None = None
    probe: bool = False
    ranged: bool = True
    block_size: int = 0
    digests: tuple[str, ...] = ()
    #: bytes of the first block before ``start`` already in the file (kept from an
    #: interrupted run): read back into the block's hash, so the block is checked whole
    block_head: int = 0
    stall_timeout: float = 30.0
    min_rate: float = 1024.0
    #: also SHA256 the bytes as they stream (a request from byte 0 that may cover the
    #: whole file): the digest comes back only if they did, and then the supervisor
    #: need not read the file again to verify it
    sha256: bool = False
    #: headers that never cross to another origin on a redirect (lower-case names),
    #: beyond the built-in credential headers
    secret_headers: frozenset[str] = frozenset()
    #: ``path`` is not a regular file (a device, a FIFO): written in order with
    #: ``write``, never ``pwrite`` (a pipe has no offsets)
    stream_only: bool = False
    #: send the answer's head (:class:`HeadSeen`) without waiting for a decision: the
    #: validators a whole-file request needs to leave a resumable ``.part`` if stopped
    report_head: bool = False
    #: the source is a peer: a ``404`` naming ``block_not_held`` means "not yet here",
    #: told apart from a 404 for a missing file (read from the answer's problem body)
    peer: bool = False


@dataclass(frozen=True)
class Head:
    """What the probe learnt about the remote file."""

    status: int
    total: int | None
    etag: str | None
    last_modified: str | None
    ranged: bool
    end: int | None
    #: the URL that answered, after redirects (later requests go straight there)
    url: str | None = None


# --- supervisor -> worker -------------------------------------------------------------
class Get(NamedTuple):
    """Run ``task`` as task ``tid``."""

    tid: int
    task: Task


class Go(NamedTuple):
    """A probe may write, up to ``end`` (to the body's end when it has no length)."""

    tid: int
    end: int


class Abort(NamedTuple):
    """A probe must not write: the supervisor needs nothing of its body."""

    tid: int


class Trim(NamedTuple):
    """Stop task ``tid`` at ``new_end`` (a split): answered by :class:`Trimmed`."""

    tid: int
    new_end: int


class Cancel(NamedTuple):
    """Stop task ``tid`` now; no answer is sent."""

    tid: int


class Stop(NamedTuple):
    """Stop the worker process."""


ToWorker = Get | Go | Abort | Trim | Cancel | Stop


# --- worker -> supervisor -------------------------------------------------------------
class Ready(NamedTuple):
    """The worker process is up and reading its pipe."""

    pid: int


class HeadSeen(NamedTuple):
    """A probe's answer head: the worker now waits for :class:`Go` or :class:`Abort`."""

    tid: int
    head: Head


class Progress(NamedTuple):
    """Task ``tid`` has written every byte before ``pos`` (what a checkpoint records
    of a running chunk comes from :mod:`accel.fetch.written`, not from here)."""

    tid: int
    pos: int


class Trimmed(NamedTuple):
    """The answer to :class:`Trim`: the new end, or None when it came too late."""

    tid: int
    new_end: int | None


class Done(NamedTuple):
    """Task ``tid`` ended well: bytes up to ``end`` written (None: an aborted probe)."""

    tid: int
    end: int | None
    xxh3: str = ""
    #: SHA256 of the whole file, when the task streamed all of it (``Task.sha256``)
    sha256: str | None = None
    #: where a redirect led, when the answer came from another URL than ``task.url``
    url: str | None = None


class Failed(NamedTuple):
    """Task ``tid`` failed with ``error`` (``retryable``: worth another request)."""

    tid: int
    error: AccelError
    retryable: bool
    retry_after: float | None = None


FromWorker = Ready | HeadSeen | Progress | Trimmed | Done | Failed
