"""The job runner: one install (or staged update) of one model version, whole life.

Owns :class:`Job` and :class:`JobRunner`: a job's creation (the task lock taken at once
if free), its place in the priority queue, the run of its steps (``steps.py``: the
manifest from the hub, planning, fetching, verifying, the swap of a staged update, the
registry writes between them), its cancellation (pause, remove, close: the bytes stay,
the version reads ``paused``), its progress events and its outcome.

The outcome is decided in one place, :meth:`JobRunner._run`, whatever a step raises:
an :class:`~accel.errors.AccelError` as it is, ENOSPC as disk full, any other
``OSError`` as the filesystem error of :func:`~accel.errors.from_os_error`, and anything
else (a bug) as an :class:`~accel.errors.InternalError` chained to it. Then the version
is recorded ``error`` with that code (even when no manifest was ever read), a ``failed``
event goes out, and the waiter's future raises the error. The job's task itself never
ends with an exception, so none is ever left in a task nobody awaits; an install can
fail, but never hang. Never prints.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from accel.errors import (
    AccelError,
    InternalError,
    ModelNotAvailableError,
    from_os_error,
)
from accel.manager.disk import disk_error, is_enospc
from accel.manager.events import (
    EventBus,
    FailedEvent,
    FailedFile,
    StateEvent,
    TotalProgress,
)
from accel.manager.hfsource import HfInstalls
from accel.manager.hubclient import HubClient
from accel.manager.install import Downloader, VersionInstall
from accel.manager.locks import HeldLock, LockBusy, LockSpace, describe_holder, task_lock_name
from accel.manager.peers import PeerFinder
from accel.manager.progress import PROGRESS_EVERY_S, progress_event, total_progress
from accel.manager.queue import PrioritySlots
from accel.manager.registry import RegistryStore, install_key
from accel.manager.staging import StagedUpdates
from accel.manager.steps import run_steps
from accel.schema import FileError, InstallRecord, Registry

__all__ = ["Job", "JobRunner", "JobSettings", "as_job_error", "job_key"]

log = logging.getLogger("accel.manager")

#: the key suffix of a staged update's job (its registry key is the version's own)
_UPDATE = "#update"


def job_key(model_id: str, version: str, *, update: bool = False) -> str:
    """The key of a version's job: its registry key, ``#update`` for a staged update."""
    return install_key(model_id, version) + (_UPDATE if update else "")


def as_job_error(exc: BaseException, key: str, models_dir: Path) -> AccelError:
    """What a job's waiter is told when ``exc`` ended it (the one translation)."""
    if isinstance(exc, AccelError):
        return exc
    if is_enospc(exc):
        return disk_error(exc, models_dir)  # type: ignore[arg-type]
    if isinstance(exc, OSError):
        err: AccelError = from_os_error(
            exc,
            action=f"write {key} into",
            path=exc.filename or models_dir,
        )
    else:
        err = InternalError(f"{key}: {type(exc).__name__}: {exc}".replace("\n", " "))
    err.__cause__ = exc
    return err


@dataclass(frozen=True)
class JobSettings:
    """How every job of one manager installs (the manager's constructor arguments)."""

    models_dir: Path
    max_parallel_files: int
    file_retries: int
    retry_backoff_s: float
    file_lock_timeout_s: float
    task_lock_timeout_s: float


@dataclass
class Job:
    """One install (or staged update) of one version in this process."""

    key: str
    model_id: str
    version: str
    priority: int
    #: the waiter's future: the ready path, or the job's error
    done: asyncio.Future[Path]
    lock: HeldLock | None = None
    task: asyncio.Task[None] | None = None
    inst: VersionInstall | None = None
    force: bool = False
    #: an update of a ready version, staged beside it (see ``ModelManager.aupdate``)
    staged: bool = False
    last_emit: float = field(default=0.0)
    #: per file, the (state, bytes done) last published: later events carry only changes
    sent: dict[str, tuple[str, int]] = field(default_factory=dict)


class JobRunner:
    """Every job of one :class:`~accel.manager.manager.ModelManager`, keyed by job key."""

    def __init__(
        self,
        settings: JobSettings,
        *,
        registry: RegistryStore,
        locks: LockSpace,
        hub: HubClient,
        hf: HfInstalls | None = None,
        peers: PeerFinder | None = None,
        staged: StagedUpdates,
        events: EventBus,
        engine: Callable[[], Awaitable[Downloader]],
        state_of: Callable[[InstallRecord], str],
        max_parallel_installs: int,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.locks = locks
        self.hub = hub
        #: hf:// versions: their manifests, file URLs and token come from there
        self.hf = hf
        #: where a version's peers are (tracker, static list); None: no peers
        self.peers = peers
        self.staged = staged
        self.events = events
        self.engine = engine
        self._state_of = state_of
        self._jobs: dict[str, Job] = {}
        self.slots = PrioritySlots(max(1, max_parallel_installs))

    # -- the table -----------------------------------------------------------------------
    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._jobs

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def __bool__(self) -> bool:
        return bool(self._jobs)

    def queued(self) -> list[str]:
        """Keys waiting for an install slot, in the order they will start."""
        return self.slots.waiting()

    def set_priority(self, key: str, priority: int) -> None:
        """A queued job moves in the queue; a running one keeps it in its registry writes."""
        job = self._jobs.get(key)
        if job is None:
            return
        job.priority = priority
        self.slots.set_priority(key, priority)
        if job.inst is not None:
            job.inst.priority = priority

    # -- life --------------------------------------------------------------------------
    def start(
        self,
        model_id: str,
        version: str,
        priority: int,
        *,
        wait: bool,
        force: bool = False,
        staged: bool = False,
    ) -> Job:
        """Create and start a job; with ``wait=False``, another process's install of the
        version is :class:`ModelNotAvailableError` ('downloading') instead of a wait."""
        key = job_key(model_id, version, update=staged)
        held: HeldLock | None = None
        try:
            held = self.locks.try_acquire(
                task_lock_name(model_id, version),
                kind="task",
                model_id=model_id,
                version=version,
                timeout_s=self.settings.task_lock_timeout_s,
            )
        except LockBusy as busy:
            if not wait:
                rec = self.registry.get(model_id, version)
                state = self._state_of(rec) if rec is not None else "downloading"
                reason = state if state in ("queued", "verifying") else "downloading"
                raise ModelNotAvailableError(
                    model_id,
                    version,
                    reason,
                    message=f"model {model_id}@{version} is being installed by "
                    f"{describe_holder(busy.holder)}",
                    holder=describe_holder(busy.holder),
                ) from None
        loop = asyncio.get_running_loop()
        job = Job(
            key, model_id, version, priority, loop.create_future(), held, force=force, staged=staged
        )
        # A waiter may never come (wait=False): the outcome counts as retrieved anyway.
        job.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._jobs[key] = job
        job.task = loop.create_task(self._run(job), name=f"accel-job {key}")
        return job

    @staticmethod
    async def wait(job: Job) -> Path:
        """The job's ready path, or its error (a cancelled waiter leaves the job running)."""
        return await asyncio.shield(job.done)

    async def cancel(self, key: str) -> bool:
        """Stop a job (its bytes stay; it reads ``paused``); False if there is none."""
        job = self._jobs.get(key)
        if job is None or job.task is None:
            return False
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)
        return True

    async def cancel_all(self) -> None:
        """Stop every job (closing the manager, or leaving a sync wrapper's loop)."""
        tasks = [j.task for j in self._jobs.values() if j.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Wait until no job is running or queued."""
        while self._jobs:
            tasks = [j.task for j in self._jobs.values() if j.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: Job) -> None:
        # The one place a job's outcome is decided; see the module docstring.
        try:
            path = await run_steps(self, job)
        except asyncio.CancelledError:
            self._paused(job)
            raise
        except BaseException as exc:
            err = as_job_error(exc, job.key, self.settings.models_dir)
            try:
                if job.inst is not None:  # a late background flush must not undo the record
                    await job.inst.quiesce()
            finally:  # even if cancelled meanwhile: the waiter must hear of it
                self._fail(job, err)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: the job failed, the process still stops
        else:
            if not job.done.done():
                job.done.set_result(path)
        finally:
            if job.lock is not None:
                job.lock.release()
            self._jobs.pop(job.key, None)

    # -- outcomes ----------------------------------------------------------------------
    def _paused(self, job: Job) -> None:
        inst = job.inst
        if inst is None or inst.state not in ("ready", "error"):
            if inst is not None:
                try:
                    inst.save("paused")
                except Exception as exc:  # the bytes are on disk; a rerun finds them
                    log.warning("cannot record %s as paused: %s", job.key, exc)
            self.publish_state(job, "paused")
        if not job.done.done():
            job.done.set_exception(ModelNotAvailableError(job.model_id, job.version, "paused"))

    def _fail(self, job: Job, err: AccelError) -> None:
        """Record ``error``, publish ``failed`` and wake the waiter, whatever fails on the way."""
        try:
            cause = err.__cause__
            if isinstance(err, InternalError) and cause is not None:
                log.error(
                    "install of %s hit a bug: %s",
                    job.key,
                    err.message,
                    extra={
                        "code": err.code,
                        "traceback": "".join(traceback.format_exception(cause)),
                    },
                )
            else:
                log.warning(
                    "install of %s failed: %s", job.key, err.message, extra={"code": err.code}
                )
            try:
                self._record_error(job, err)
            except Exception as exc:  # e.g. the registry write was what failed
                log.warning("cannot record the failure of %s: %s", job.key, exc)
            files = []
            if job.inst is not None:
                files = [
                    FailedFile(path=r.status.path, error=r.status.error)
                    for r in job.inst.files.values()
                    if r.status.state == "error" and r.status.error is not None
                ]
            self.events.publish(
                FailedEvent(
                    model_id=job.model_id,
                    version=job.version,
                    error=FileError(code=err.code, message=err.message),
                    failed_files=files,
                    update=job.staged,
                )
            )
        finally:
            if not job.done.done():
                job.done.set_exception(err)

    def _record_error(self, job: Job, err: AccelError) -> None:
        error = FileError(code=err.code, message=err.message)
        inst = job.inst
        if inst is not None:
            if inst.state != "error":  # a step that failed before saying why
                inst.save("error", error)
            return
        # No manifest was read (the hub's answer, the task lock): the version still
        # reads ``error`` with the cause, so ``status`` and the node API show it.
        key = install_key(job.model_id, job.version)
        final = self.staged.final_dir(job.model_id, job.version)

        def change(reg: Registry) -> None:
            table = reg.updates if job.staged else reg.installs
            rec = table.get(key)
            now = time.time()
            if rec is None:
                table[key] = InstallRecord(
                    model_id=job.model_id,
                    version=job.version,
                    state="error",
                    path=str(final),
                    bytes_total=0,
                    priority=job.priority,
                    error=error,
                    created_at=now,
                    updated_at=now,
                )
            elif rec.state != "ready":  # a ready version stays usable
                rec.state, rec.error, rec.updated_at = "error", error, now
                rec.owner_pid = rec.owner_start = None

        self.registry.update(change)

    # -- events ------------------------------------------------------------------------
    def publish_state(self, job: Job, state: str) -> None:
        """A ``state`` event for ``job``."""
        self.events.publish(
            StateEvent(model_id=job.model_id, version=job.version, state=state, update=job.staged)
        )

    def emit_progress(self, job: Job, *, force: bool = False) -> None:
        """A progress event for ``job`` (at most every 0.25 s unless ``force``)."""
        now = time.monotonic()
        if job.inst is None or (not force and now - job.last_emit < PROGRESS_EVERY_S):
            return
        job.last_emit = now
        # Only the files that changed since the last event (a 121-file version would
        # repeat ~15 KB per line otherwise); the first event of a job carries them all.
        # The install names the files that may have changed (the few in flight and
        # those that ended since): a scan of every file per event made a long install
        # of many files O(n^2). The first event of a job scans them all.
        maybe = job.inst.take_changed()
        paths = job.inst.files.keys() if maybe is None or not job.sent else maybe
        changed = {
            path
            for path in paths
            if job.sent.get(path)
            != (job.inst.files[path].status.state, job.inst.files[path].bytes_done)
        }
        for path in changed:
            run = job.inst.files[path]
            job.sent[path] = (run.status.state, run.bytes_done)
        self.events.publish(
            progress_event(
                job.inst, total=self.total_progress(), update=job.staged, now=now, files=changed
            )
        )

    def total_progress(self) -> TotalProgress:
        """All jobs together."""
        return total_progress(j.inst for j in self._jobs.values() if j.inst is not None)
