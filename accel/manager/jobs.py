"""The job runner: one install (or staged update) of one model version, whole life.

Owns :class:`Job` and :class:`JobRunner`: a job's creation (the task lock taken at once,
or waited for), its place in the priority queue, its steps (the manifest from the hub,
planning, fetching, verifying, the swap of a staged update, the registry writes between
them), its cancellation (pause, remove, close: the bytes stay, the version reads
``paused``) and its outcome.

The outcome is decided in one place, :meth:`JobRunner._run`, whatever a step raises:
an :class:`~accel.errors.AccelError` as it is, ENOSPC as disk full, any other
``OSError`` as a :class:`~accel.errors.ConfigError` of the models dir, and anything
else (a bug) as an :class:`~accel.errors.InternalError` chained to it. Then the version
is recorded ``error`` with that code (even when no manifest was ever read), a ``failed``
event goes out, and the waiter's future raises the error. The job's task itself never
ends with an exception, so none is ever left in a task nobody awaits; an install can
fail, but never hang. Never prints; the steps' work lives in ``install.py`` (files) and
``staging.py`` (the swap).
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
    ConfigError,
    InsufficientDiskSpaceError,
    InternalError,
    ModelNotAvailableError,
)
from accel.manager.disk import disk_error, is_enospc
from accel.manager.events import (
    EventBus,
    FailedEvent,
    FailedFile,
    ProgressEvent,
    ReadyEvent,
    StateEvent,
    TotalProgress,
)
from accel.manager.hubclient import HubClient
from accel.manager.install import Downloader, VersionInstall, summarize
from accel.manager.locks import HeldLock, LockBusy, LockSpace, describe_holder
from accel.manager.queue import PrioritySlots
from accel.manager.registry import RegistryStore, install_key
from accel.manager.staging import StagedUpdates
from accel.schema import FileError, InstallRecord, Registry

__all__ = ["Job", "JobRunner", "JobSettings", "as_job_error", "job_key", "task_lock_name"]

log = logging.getLogger("accel.manager")

_PROGRESS_EVERY_S = 0.25

#: the key suffix of a staged update's job (its registry key is the version's own)
_UPDATE = "#update"


def job_key(model_id: str, version: str, *, update: bool = False) -> str:
    """The key of a version's job: its registry key, ``#update`` for a staged update."""
    return install_key(model_id, version) + (_UPDATE if update else "")


def task_lock_name(model_id: str, version: str) -> str:
    """The task lock every process takes to install or update ``model_id@version``."""
    return f"tasks/{model_id.replace('/', '--')}@{version}"


def as_job_error(exc: BaseException, key: str, models_dir: Path) -> AccelError:
    """What a job's waiter is told when ``exc`` ended it (the one translation)."""
    if isinstance(exc, AccelError):
        return exc
    if is_enospc(exc):
        return disk_error(exc, models_dir)  # type: ignore[arg-type]
    if isinstance(exc, OSError):
        where = exc.filename or models_dir
        err: AccelError = ConfigError(
            f"{key}: cannot write {where}: {exc.strerror or exc}",
            hint="check the models dir (permissions, mount, free space), then rerun: "
            "fetched bytes are kept",
            path=str(where),
            errno=exc.errno,
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


class JobRunner:
    """Every job of one :class:`~accel.manager.manager.ModelManager`, keyed by job key."""

    def __init__(
        self,
        settings: JobSettings,
        *,
        registry: RegistryStore,
        locks: LockSpace,
        hub: HubClient,
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
        self.staged = staged
        self.events = events
        self._engine = engine
        self._state_of = state_of
        self._jobs: dict[str, Job] = {}
        self._slots = PrioritySlots(max(1, max_parallel_installs))

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
        return self._slots.waiting()

    def set_priority(self, key: str, priority: int) -> None:
        """A queued job moves in the queue; a running one keeps it in its registry writes."""
        job = self._jobs.get(key)
        if job is None:
            return
        job.priority = priority
        self._slots.set_priority(key, priority)
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
            path = await self._steps(job)
        except asyncio.CancelledError:
            self._paused(job)
            raise
        except BaseException as exc:
            if job.inst is not None:
                await job.inst.quiesce()  # a late background flush must not undo the record
            self._fail(job, as_job_error(exc, job.key, self.settings.models_dir))
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: the job failed, the process still stops
        else:
            if not job.done.done():
                job.done.set_result(path)
        finally:
            if job.lock is not None:
                job.lock.release()
            self._jobs.pop(job.key, None)

    async def _steps(self, job: Job) -> Path:
        if job.lock is None:
            job.lock = await self.locks.acquire(
                task_lock_name(job.model_id, job.version),
                kind="task",
                model_id=job.model_id,
                version=job.version,
                timeout_s=self.settings.task_lock_timeout_s,
            )
        staging: Path | None = None
        if job.staged:
            manifest = await self.hub.manifest(job.model_id, job.version)
            plan = await asyncio.to_thread(
                self.staged.begin, job.model_id, job.version, manifest.checksum_sha256
            )
            if plan == "up_to_date":
                return self.staged.final_dir(job.model_id, job.version)
            if plan == "in_place":  # not ready: nothing to keep usable
                job.staged, job.force = False, True
            else:
                staging = plan
        else:
            rec = self.registry.get(job.model_id, job.version)
            ready = rec is not None and rec.state == "ready" and Path(rec.path).is_dir()
            if ready and not job.force:
                assert rec is not None
                return Path(rec.path)  # installed by the process we waited for
            manifest = await self.hub.manifest(job.model_id, job.version)
        s = self.settings
        inst = VersionInstall(
            models_dir=s.models_dir,
            registry=self.registry,
            locks=self.locks,
            engine=await self._engine(),
            url_of=lambda p: self.hub.storage_url(job.model_id, job.version, p),
            manifest=manifest,
            priority=job.priority,
            max_parallel_files=s.max_parallel_files,
            file_retries=s.file_retries,
            on_change=lambda _i: self.emit_progress(job),
            retry_backoff_s=s.retry_backoff_s,
            file_lock_timeout_s=s.file_lock_timeout_s,
            owner_start=self.locks.start_time,
            staging=staging,
        )
        job.inst = inst
        inst.prepare()
        inst.save("queued")
        self._state(job, "queued")
        await self._slots.acquire(job.key, job.priority)
        try:
            return await self._install(job, inst)
        finally:
            self._slots.release()

    async def _install(self, job: Job, inst: VersionInstall) -> Path:
        inst.save("downloading")
        self._state(job, "downloading")
        log.info("installing %s (%d files)", job.key, len(inst.files), extra={"key": job.key})
        inst.adopt_finished()
        inst.reuse_identical()
        try:
            inst.check_space()
        except InsufficientDiskSpaceError as exc:
            inst.save("error", FileError(code=exc.code, message=exc.message))
            raise
        failed = await inst.fetch_missing()
        if failed:
            inst.save("error", inst.failure(failed))
            first = inst.errors.get(failed[0].path)
            raise first or ModelNotAvailableError(job.model_id, job.version, "error")
        inst.save("verifying")
        self._state(job, "verifying")
        bad = inst.verify_all()
        if bad:
            inst.save("error", inst.failure(bad))
            raise ModelNotAvailableError(job.model_id, job.version, "error")
        cancelled: asyncio.CancelledError | None = None
        if inst.staging is not None:
            # The ready version was usable all along; now the new content takes its
            # place in one step and the old one is deleted (open files stay readable).
            # A pause arriving now waits for these few milliseconds: a swap is never
            # left half-recorded by a live process.
            swap = asyncio.ensure_future(asyncio.to_thread(self.staged.swap_in, inst))
            try:
                await asyncio.shield(swap)
            except asyncio.CancelledError as exc:
                await swap
                cancelled = exc
            inst.state = "ready"
        else:
            inst.save("ready")
        self.emit_progress(job, force=True)
        facts = summarize(inst)
        path = inst.final_dir
        log.info("ready %s at %s", job.key, path, extra={"key": job.key, **facts})
        self.events.publish(
            ReadyEvent(
                model_id=job.model_id,
                version=job.version,
                path=str(path),
                update=job.staged,
                **facts,
            )
        )
        if cancelled is not None:
            job.done.set_result(path)  # it is ready: the pause came too late to stop it
            raise cancelled
        return path

    # -- outcomes ----------------------------------------------------------------------
    def _paused(self, job: Job) -> None:
        inst = job.inst
        if inst is None or inst.state not in ("ready", "error"):
            if inst is not None:
                try:
                    inst.save("paused")
                except Exception as exc:  # the bytes are on disk; a rerun finds them
                    log.warning("cannot record %s as paused: %s", job.key, exc)
            self._state(job, "paused")
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
    def _state(self, job: Job, state: str) -> None:
        self.events.publish(
            StateEvent(model_id=job.model_id, version=job.version, state=state, update=job.staged)
        )

    def emit_progress(self, job: Job, *, force: bool = False) -> None:
        """A progress event for ``job`` (at most every 0.25 s unless ``force``)."""
        inst = job.inst
        if inst is None:
            return
        now = time.monotonic()
        if not force and now - job.last_emit < _PROGRESS_EVERY_S:
            return
        job.last_emit = now
        speed = inst.speed_bps
        remaining = inst.bytes_total - inst.bytes_done
        self.events.publish(
            ProgressEvent(
                model_id=inst.model_id,
                version=inst.version,
                state=inst.state,
                bytes_done=inst.bytes_done,
                bytes_total=inst.bytes_total,
                speed_bps=round(speed, 1),
                eta_s=round(remaining / speed, 2) if speed > 0 else None,
                files=[r.progress() for r in inst.files.values()],
                total=self.total_progress(),
                update=job.staged,
            )
        )

    def total_progress(self) -> TotalProgress:
        """All jobs together."""
        insts = [j.inst for j in self._jobs.values() if j.inst is not None]
        done = sum(i.bytes_done for i in insts)
        total = sum(i.bytes_total for i in insts)
        speed = sum(i.speed_bps for i in insts)
        return TotalProgress(
            bytes_done=done,
            bytes_total=total,
            speed_bps=round(speed, 1),
            eta_s=round((total - done) / speed, 2) if speed > 0 else None,
            active=sum(1 for i in insts if i.state == "downloading"),
        )
