"""Cross-process locks for installs: OS-level locks plus JSON records that say who holds them.

Owns the task lock (one per model@version, default timeout 30 min) and the file lock (one
per file content, keyed by sha256, default 5 min). A task lock is a portalocker (flock)
lock on ``<name>.lock``; a file lock is a byte-range lock (an open file description
lock, ``F_OFD_SETLK``) on one byte of the one file ``files.ranges``, at an offset the
lock's name hashes to (56 bits: two names share a byte about once in 10^16 pairs, and
then only wait for each other). Both are released by a crash and held per open file,
not per process, so two holders in one process exclude each other too; a file lock
costs no file of its own: creating one per file content cost a version of 500 files
500 creates, each ~0.13 ms of CPU and up to 1 ms of wall in the event loop while the
workers write, and left one file per content ever installed. Next to a lock,
``<name>.json`` holds a :class:`~accel.schema.LockRecord` that the holder refreshes
(heartbeat). A waiter never breaks a lock: it waits while the holder heartbeats and
gives up with :class:`~accel.errors.LockTimeoutError`, naming the holder, once the
heartbeat is older than the record's ``timeout_s``. Lock files are never deleted
(deleting a file another process is opening breaks mutual exclusion); only records of
dead holders are.

A file lock's record may be written late (``record=False``, then :meth:`HeldLock.ensure_recorded`
or the first heartbeat): a version of 500 small files holds 500 file locks for a few
milliseconds each, and creating, renaming and unlinking a record for each cost more
than fetching the files. A waiter that finds the lock busy without a record waits for
the record to appear; it gives up (:class:`~accel.errors.LockTimeoutError`, holder
unknown) only after its own timeout passes without one.

The policy (is this record's holder alive? is it stale?) is pure and lives in
:func:`holder_status`; the rest is thin I/O around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import portalocker
import psutil
from pydantic import ValidationError

from accel.errors import LockTimeoutError
from accel.manager.fsutil import atomic_write_bytes
from accel.schema import LockRecord

__all__ = [
    "FILE_LOCK_TIMEOUT_S",
    "RECORD_MAX_AGE_S",
    "TASK_LOCK_TIMEOUT_S",
    "HeldLock",
    "LockBusy",
    "LockSpace",
    "holder_status",
    "process_start_time",
    "task_lock_name",
]

TASK_LOCK_TIMEOUT_S = 30 * 60.0
FILE_LOCK_TIMEOUT_S = 5 * 60.0
RECORD_MAX_AGE_S = 60 * 60.0
#: create_time is reported with ~10 ms resolution; anything closer is the same process
_START_TOLERANCE_S = 1.0

HolderStatus = Literal["alive", "dead", "reused", "old", "unknown"]

#: locks whose names start so are byte-range locks in :data:`RANGES_FILE`
_RANGED_PREFIX = "files/"
RANGES_FILE = "files.ranges"
#: ``struct flock`` (Linux, 64-bit off_t): l_type, l_whence, l_start, l_len, l_pid
_FLOCK = struct.Struct("hhqqi4x")


def _range_of(name: str) -> int:
    """The byte of :data:`RANGES_FILE` that lock ``name`` locks."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")


def _lock_byte(fd: int, offset: int) -> bool:
    """Take an exclusive open-file-description lock on one byte; False if another holds it."""
    arg = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, arg)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class _RangeLock:
    """One byte of :data:`RANGES_FILE` locked through an open file description of its own.

    ``close()`` releases it: the byte is unlocked and the descriptor kept by its
    :class:`LockSpace` for the next lock (a version of 10,000 small files opened the
    file 10,000 times, through a text-file object each).
    """

    __slots__ = ("fd", "offset", "spare")

    def __init__(self, fd: int, offset: int, spare: list[int]) -> None:
        self.fd, self.offset, self.spare = fd, offset, spare

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            fcntl.fcntl(
                fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, self.offset, 1, 0)
            )
        except OSError:
            os.close(fd)  # the lock goes with its open file description anyway
            return
        if len(self.spare) < _SPARE_FDS:
            self.spare.append(fd)
        else:
            os.close(fd)


#: unlocked descriptors of :data:`RANGES_FILE` a :class:`LockSpace` keeps for reuse
_SPARE_FDS = 64


def task_lock_name(model_id: str, version: str) -> str:
    """The task lock every process takes to install, update or remove ``model_id@version``."""
    return f"tasks/{model_id.replace('/', '--')}@{version}"


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (psutil create_time), or ``None`` if there is none."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0


def holder_status(
    record: LockRecord,
    *,
    now: float,
    hostname: str,
    start_time_of: Callable[[int], float | None],
    max_age_s: float = RECORD_MAX_AGE_S,
) -> HolderStatus:
    """Whether the process named by ``record`` still holds it (pure, given ``start_time_of``).

    ``dead``: no such pid; ``reused``: the pid belongs to a process started at another
    time; ``old``: no heartbeat for ``max_age_s``; ``unknown``: another host (we cannot
    look at its processes); ``alive`` otherwise.
    """
    if now - record.heartbeat_at > max_age_s:
        return "old"
    if record.hostname != hostname:
        return "unknown"
    started = start_time_of(record.pid)
    if started is None:
        return "dead"
    if started >= 0 and abs(started - record.process_start_time) > _START_TOLERANCE_S:
        return "reused"
    return "alive"


def describe_holder(record: LockRecord | None) -> str:
    """``pid 123 on host (model@version[, file])`` for messages."""
    if record is None:
        return "an unknown process"
    what = f"{record.model_id}@{record.version}"
    if record.file:
        what += f", {record.file}"
    return f"pid {record.pid} on {record.hostname} ({what})"


class LockBusy(Exception):
    """Raised by a non-waiting acquire when another process holds the lock."""

    def __init__(self, holder: LockRecord | None) -> None:
        super().__init__(describe_holder(holder))
        self.holder = holder


@dataclass
class HeldLock:
    """A lock this process holds: the open lock file and the record it heartbeats."""

    space: LockSpace
    name: str
    handle: IO[str] | _RangeLock
    record: LockRecord
    recorded: bool = True

    def heartbeat(self) -> None:
        """Refresh ``heartbeat_at`` in the record (atomic rewrite; writes a late record)."""
        self.record.heartbeat_at = time.time()
        self.space.write_record(self.name, self.record)
        self.recorded = True

    def ensure_recorded(self) -> None:
        """Write the record of a lock taken with ``record=False``, if still held."""
        if not self.recorded and self.space.held.get(self.name) is self:
            with contextlib.suppress(OSError):
                self.heartbeat()

    def release(self) -> None:
        """Drop the record, then the OS lock (in that order: the next holder's record wins)."""
        self.space.held.pop(self.name, None)
        if self.recorded:
            with contextlib.suppress(OSError):
                self.space.record_path(self.name).unlink(missing_ok=True)
        self.handle.close()  # the flock or the byte-range lock goes with its open file


class LockSpace:
    """The locks directory of a models dir (``.accel/locks``) and the locks held in it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.start_time = process_start_time(self.pid) or time.time()
        self.held: dict[str, HeldLock] = {}
        #: unlocked descriptors of RANGES_FILE (see :class:`_RangeLock`)
        self._spare: list[int] = []

    # -- names and records -------------------------------------------------------------
    def lock_path(self, name: str) -> Path:
        return self.directory / f"{name}.lock"

    def record_path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def read_record(self, name: str) -> LockRecord | None:
        """The record of lock ``name``, or ``None`` if absent or unreadable."""
        try:
            return LockRecord.model_validate_json(self.record_path(name).read_bytes())
        except (OSError, ValueError, ValidationError):
            return None

    def write_record(self, name: str, record: LockRecord) -> None:
        self.record_path(name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.record_path(name), record.model_dump_json().encode(), durable=False)

    def records(self) -> list[tuple[str, LockRecord | None]]:
        """Every lock record in the directory (name, parsed record or ``None`` if torn)."""
        out: list[tuple[str, LockRecord | None]] = []
        for path in sorted(self.directory.rglob("*.json")):
            name = str(path.relative_to(self.directory))[: -len(".json")]
            out.append((name, self.read_record(name)))
        return out

    # -- acquire -----------------------------------------------------------------------
    def try_acquire(
        self,
        name: str,
        *,
        kind: Literal["task", "file"],
        model_id: str,
        version: str,
        file: str | None = None,
        timeout_s: float,
        record: bool = True,
    ) -> HeldLock:
        """Take lock ``name`` now or raise :class:`LockBusy` naming the holder.

        ``record=False`` defers the record (see the module docstring): the caller must
        call :meth:`HeldLock.ensure_recorded` if it holds the lock for long.
        """
        handle = self._take(name)
        if handle is None:
            raise LockBusy(self.read_record(name))
        now = time.time()
        value = LockRecord.model_construct(  # our own values: no validation per lock
            kind=kind,
            pid=self.pid,
            hostname=self.hostname,
            process_start_time=self.start_time,
            model_id=model_id,
            version=version,
            file=file,
            created_at=now,
            heartbeat_at=now,
            timeout_s=timeout_s,
        )
        held = HeldLock(self, name, handle, value, recorded=record)
        try:
            if record:
                self.write_record(name, value)
            else:
                # A record left by a holder that died must not speak for us meanwhile.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.directory}/{name}.json")
        except BaseException:
            held.release()
            raise
        self.held[name] = held
        return held

    async def acquire(
        self,
        name: str,
        *,
        kind: Literal["task", "file"],
        model_id: str,
        version: str,
        file: str | None = None,
        timeout_s: float,
        poll_s: float = 0.05,
        on_wait: Callable[[LockRecord | None], None] | None = None,
        record: bool = True,
    ) -> HeldLock:
        """Take lock ``name``, waiting while its holder heartbeats.

        Raises :class:`~accel.errors.LockTimeoutError` naming the holder when its
        heartbeat is older than its record's ``timeout_s``, or when the lock stays busy
        without any record for ``timeout_s``.
        """
        announced = False
        unrecorded_since: float | None = None
        attempt = functools.partial(
            self.try_acquire,
            name,
            kind=kind,
            model_id=model_id,
            version=version,
            file=file,
            timeout_s=timeout_s,
            record=record,
        )
        while True:
            try:
                # On the event loop: an open, a flock and (record=False) an unlink of
                # nothing cost tens of microseconds, and a hop to a thread and back cost
                # more than that in wait for the GIL (many small files: 7% of the wall).
                return attempt()
            except LockBusy as busy:
                holder = busy.holder
                if not announced and on_wait is not None:
                    on_wait(holder)
                    announced = True
                if holder is not None and time.time() - holder.heartbeat_at > holder.timeout_s:
                    raise LockTimeoutError(
                        f"lock {name} is held by {describe_holder(holder)}, which has not "
                        f"heartbeaten for {time.time() - holder.heartbeat_at:.0f} s "
                        f"(timeout {holder.timeout_s:.0f} s)",
                        lock=name,
                        holder=describe_holder(holder),
                        holder_pid=holder.pid,
                        holder_host=holder.hostname,
                    ) from None
                if holder is not None:
                    unrecorded_since = None
                elif unrecorded_since is None:
                    unrecorded_since = time.monotonic()
                elif time.monotonic() - unrecorded_since > timeout_s:
                    raise LockTimeoutError(
                        f"lock {name} is held by a process that wrote no lock record "
                        f"for {time.monotonic() - unrecorded_since:.0f} s "
                        f"(timeout {timeout_s:.0f} s)",
                        lock=name,
                        holder=describe_holder(None),
                    ) from None
            await asyncio.sleep(poll_s)

    def heartbeat_all(self) -> None:
        """Refresh every held lock's record (called by the manager's heartbeat task)."""
        for held in list(self.held.values()):
            with contextlib.suppress(OSError):
                held.heartbeat()

    # -- cleanup -----------------------------------------------------------------------
    def cleanup(self, *, now: float | None = None) -> list[tuple[str, str]]:
        """Remove records whose holder is gone (dead, pid reused, or older than 1 hour).

        A record is only removed when its OS lock is free (or the record is over an hour
        old), so a live holder in another PID namespace is never robbed of its record.
        Returns ``(name, why)`` for each record removed.
        """
        now = time.time() if now is None else now
        removed: list[tuple[str, str]] = []
        for name, record in self.records():
            if name in self.held:
                continue
            if record is None:
                why = "unreadable"
            else:
                why = holder_status(
                    record, now=now, hostname=self.hostname, start_time_of=process_start_time
                )
                if why in ("alive", "unknown"):
                    continue
            if why != "old" and not self._lock_is_free(name):
                continue
            with contextlib.suppress(OSError):
                self.record_path(name).unlink()
                removed.append((name, why))
        return removed

    def _lock_is_free(self, name: str) -> bool:
        if not name.startswith(_RANGED_PREFIX) and not self.lock_path(name).exists():
            return True
        handle = self._take(name)
        if handle is None:
            return False
        handle.close()
        return True

    def _take(self, name: str) -> IO[str] | _RangeLock | None:
        """Lock ``name`` without waiting: the open file that holds it, or None if busy."""
        if name.startswith(_RANGED_PREFIX):
            return self._take_range(name)
        path = self.lock_path(name)
        try:
            handle = open(path, "a")  # noqa: SIM115 - kept open while the lock is held
        except FileNotFoundError:  # the first lock of its folder
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a")  # noqa: SIM115
        try:
            portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
            return handle
        except portalocker.LockException:
            pass
        except BaseException:
            handle.close()
            raise
        handle.close()
        return None

    def _take_range(self, name: str) -> _RangeLock | None:
        if self._spare:
            fd = self._spare.pop()
        else:
            path = self.directory / RANGES_FILE
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(path, flags, 0o644)
        lock = _RangeLock(fd, _range_of(name), self._spare)
        try:
            if _lock_byte(fd, lock.offset):
                return lock
        except BaseException:
            os.close(fd)
            raise
        lock.close()  # (nothing locked: back to the spares)
        return None
