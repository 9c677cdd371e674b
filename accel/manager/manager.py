"""``ModelManager``: install, locate, verify and remove model versions in a models dir.

Owns the public node-side API. It resolves versions against the hub (through the
manifest cache) and hands each install or update to the
:class:`~accel.manager.jobs.JobRunner`, which serialises it across processes with a task
lock, queues it by priority, runs it on one shared fetch engine and owns its outcome.
``get_model_path`` answers from the registry alone, without the network. The async
methods are the real API; each sync method is a one-line wrapper that runs its coroutine
on a private event loop. Never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from accel.errors import (
    AccelError,
    BadManifestError,
    HubError,
    ModelNotAvailableError,
    NotFoundError,
)
from accel.manager import logs as logs_mod
from accel.manager.events import (
    Event,
    EventBus,
    RemovedEvent,
    StateEvent,
    Subscription,
    TotalProgress,
    WarningEvent,
)
from accel.manager.fsutil import safe_relpath, safe_segment
from accel.manager.hfsource import HfInstalls, HfRef, is_hf_ref
from accel.manager.hubclient import HubClient
from accel.manager.install import Downloader, hash_file
from accel.manager.jobs import JobRunner, JobSettings, job_key
from accel.manager.locks import (
    FILE_LOCK_TIMEOUT_S,
    TASK_LOCK_TIMEOUT_S,
    LockBusy,
    LockSpace,
    describe_holder,
    process_start_time,
    task_lock_name,
)
from accel.manager.peers import PEER_TOKEN_ENV, PeerFinder
from accel.manager.progress import live_fields
from accel.manager.registry import RegistryStore, install_key
from accel.manager.staging import StagedUpdates
from accel.manager.states import effective_state, not_available
from accel.schema import FileError, InstallRecord, Registry, UpdateStatus

__all__ = ["ModelManager", "version_key"]

log = logging.getLogger("accel.manager")
T = TypeVar("T")


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order of version strings: ``1.10`` after ``1.9``, numbers before words."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


class ModelManager:
    """Installs model versions from a hub into ``models_dir`` and tells you when they are ready.

    ``max_parallel_files`` caps files in flight per model (small files of at most 4 MiB,
    each one request, four times as many), ``file_retries`` the attempts
    per file, ``limit_rate`` (bytes/s or "50M") the total bandwidth of this manager, and
    ``manifest_ttl_s`` how long a hub answer is used without asking again. Use it as an
    async context manager, or call :meth:`aclose`, so worker processes stop.

    Peers (other nodes serving what they hold, :mod:`accel.manager.peers`): with
    ``peer_token`` (else ``$ACCEL_PEER_TOKEN``) the hub's tracker is asked for each
    version's peers (``peer_zone`` and ``node_id`` tell it where this node is and who
    it is), and ``peers`` are base URLs used without the tracker. None is trusted:
    every block is checked, and the hub stays the source of last resort.
    """

    def __init__(
        self,
        models_dir: str | os.PathLike[str],
        hub_url: str | None,
        *,
        token: str | None = None,
        max_parallel_files: int = 3,
        file_retries: int = 3,
        limit_rate: float | str | None = None,
        manifest_ttl_s: float = 300.0,
        max_parallel_installs: int = 2,
        workers: int | None = None,
        engine: Downloader | None = None,
        task_lock_timeout_s: float = TASK_LOCK_TIMEOUT_S,
        file_lock_timeout_s: float = FILE_LOCK_TIMEOUT_S,
        heartbeat_s: float | None = None,
        retry_backoff_s: float = 0.5,
        hf_endpoint: str | None = None,
        hf_token: str | None = None,
        peer_token: str | None = None,
        peers: Sequence[str] = (),
        peer_zone: str = "",
        node_id: str = "",
    ) -> None:
        self.models_dir = Path(models_dir).resolve()
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.models_dir / ".accel"
        self.hub_url = hub_url
        self.token = token
        self.max_parallel_files = max(1, max_parallel_files)
        self.file_retries = max(1, file_retries)
        self.limit_rate = limit_rate
        self.workers = workers
        self.task_lock_timeout_s = task_lock_timeout_s
        self.file_lock_timeout_s = file_lock_timeout_s
        self.heartbeat_s = heartbeat_s or min(
            10.0, task_lock_timeout_s / 3, file_lock_timeout_s / 3
        )
        self.retry_backoff_s = retry_backoff_s
        self.registry = RegistryStore(self.models_dir)
        self.staged = StagedUpdates(self.models_dir, self.state_dir, self.registry)
        self.locks = LockSpace(self.state_dir / "locks")
        self.events = EventBus()
        self.hub = HubClient(
            hub_url, self.state_dir, token=token, ttl_s=manifest_ttl_s, on_warning=self._warn
        )
        # hf://REPO[@REV] installs (HF_ENDPOINT / HF_TOKEN when not given)
        self.hf = HfInstalls(hf_endpoint, hf_token, self.state_dir)
        # Peers (accel.manager.peers): the tracker's with the fleet token (argument, else
        # ACCEL_PEER_TOKEN), and the static ones; the hub stays the last resort.
        self.peers = PeerFinder(
            self.hub,
            token=(peer_token or os.environ.get(PEER_TOKEN_ENV, "")).strip() or None,
            static=tuple(peers),
            zone=peer_zone,
            node_id=node_id,
        )
        self._own_engine = engine is None
        self._engine: Downloader | None = engine
        self._engine_lock = asyncio.Lock()
        self._engine_start: asyncio.Future[Downloader] | None = None
        self.jobs = JobRunner(
            JobSettings(
                models_dir=self.models_dir,
                max_parallel_files=self.max_parallel_files,
                file_retries=self.file_retries,
                retry_backoff_s=retry_backoff_s,
                file_lock_timeout_s=file_lock_timeout_s,
                task_lock_timeout_s=task_lock_timeout_s,
            ),
            registry=self.registry,
            locks=self.locks,
            hub=self.hub,
            hf=self.hf,
            peers=self.peers,
            staged=self.staged,
            events=self.events,
            engine=self._get_engine,
            state_of=self._effective,
            max_parallel_installs=max_parallel_installs,
        )
        self._heartbeat: asyncio.Task[None] | None = None
        self._log_handler = logs_mod.JsonLinesHandler(self.state_dir / "logs" / "accel.log")
        log.addHandler(self._log_handler)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
        self.cleanup_locks()

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> ModelManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop installs (they stay resumable, shown as ``paused``), workers and streams."""
        await self._release_loop()
        self.events.close()
        log.removeHandler(self._log_handler)
        self._log_handler.close()

    def close(self) -> None:
        """Blocking :meth:`aclose`."""
        asyncio.run(self.aclose())

    async def _release_loop(self) -> None:
        # Everything bound to the running event loop: jobs, heartbeat, engine, session.
        await self.jobs.cancel_all()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._engine_start is not None:
            await asyncio.gather(self._engine_start, return_exceptions=True)
            self._engine_start = None
        if self._own_engine and self._engine is not None:
            await self._engine.aclose()  # type: ignore[attr-defined]
            self._engine = None
        await self.hub.aclose()
        self._engine_lock = asyncio.Lock()  # a sync wrapper's next call runs on a new loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        async def main() -> T:
            try:
                return await coro
            finally:
                await self._release_loop()

        return asyncio.run(main())

    def _ensure_started(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.locks.heartbeat_all()

    async def _get_engine(self) -> Downloader:
        async with self._engine_lock:
            if self._engine is None:
                from accel.fetch import Engine

                # No default headers: each download carries its own source's credentials
                # (the hub's token never reaches an HF endpoint: manager/credentials.py).
                engine = Engine(workers=self.workers, limit_rate=self.limit_rate)
                # Started once, before any download: concurrent first downloads must not
                # race the worker processes' start-up.
                await engine.start()
                self._engine = engine
            return self._engine

    # -- events ------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[Event], None] | None = None) -> Subscription:
        """Events as an async iterator (``async for ev in mm.subscribe()``) or to a callback.

        ``progress`` (per file, per version, total), ``state``, ``ready`` (with the path),
        ``failed`` (failed files and causes), ``removed`` and ``warning``.
        """
        return self.events.subscribe(callback)

    def _warn(self, message: str) -> None:
        self.events.publish(WarningEvent(message=message))

    def total_progress(self) -> TotalProgress:
        """All installs of this manager together."""
        return self.jobs.total_progress()

    def _state(self, model_id: str, version: str, state: str, *, update: bool = False) -> None:
        self.events.publish(
            StateEvent(model_id=model_id, version=version, state=state, update=update)
        )

    # -- reading -----------------------------------------------------------------------
    def _owner_alive(self, pid: int, start: float | None) -> bool:
        if pid == os.getpid():
            return True  # our own records are judged by _effective
        started = process_start_time(pid)
        if started is None:
            return False
        return start is None or started < 0 or abs(started - start) <= 1.0

    def _effective(self, rec: InstallRecord, *, update: bool = False) -> str:
        key = job_key(rec.model_id, rec.version, update=update)
        if (rec.owner_pid == os.getpid() and key not in self.jobs) and rec.state in (
            "queued",
            "downloading",
            "verifying",
        ):
            return "paused"
        return effective_state(rec, owner_alive=self._owner_alive)

    def _newest_ready(self, reg: Registry, model_id: str) -> str | None:
        ready = [
            r.version
            for r in reg.installs.values()
            if r.model_id == model_id and self._effective(r) == "ready"
        ]
        return max(ready, key=version_key) if ready else None

    def get_model_path(self, model_id: str, version: str | None = None) -> Path:
        """The directory of a ready version, or :class:`ModelNotAvailableError` with why not.

        ``version=None`` means the hub's ``default_version`` as last seen (no request is
        made), or the newest ready installed version when the hub was never asked.
        """
        reg = self.registry.read()
        if is_hf_ref(model_id):
            ref = HfRef.parse(model_id)
            model_id, version = ref.repo, version or ref.revision
        alias = HfInstalls.alias(reg, model_id, version)  # an hf:// revision name -> its sha
        if alias is not None and install_key(model_id, version or "") not in reg.installs:
            version = alias
        if version is None:
            version = self.hub.cached_default_version(model_id) or self._newest_ready(reg, model_id)
            if version is None:
                raise ModelNotAvailableError(model_id, None, "not_installed")
        key = install_key(model_id, version)
        rec = reg.installs.get(key)
        state = self._effective(rec) if rec is not None else None
        if rec is not None and state == "ready":
            path = Path(rec.path)
            if path.is_dir():
                return path
            staged = reg.updates.get(key)
            if staged is not None and staged.swap_ino is not None:
                # Between the two renames of a swap where the filesystem cannot
                # exchange directories: the new content is milliseconds away.
                time.sleep(0.05)
                if path.is_dir():
                    return path
            raise ModelNotAvailableError(
                model_id, version, "error", message=f"model {model_id}@{version}: {path} is gone"
            )
        raise not_available(model_id, version, rec, state)

    async def aget_model_path(self, model_id: str, version: str | None = None) -> Path:
        """Like :meth:`get_model_path`, but ``version=None`` asks the hub (cached)."""
        if version is None:
            with contextlib.suppress(HubError):
                version = await self.resolve_version(model_id, None)
        return self.get_model_path(model_id, version)

    def status(
        self, model_id: str | None = None, version: str | None = None
    ) -> list[InstallRecord]:
        """Every matching version's record, with the state a reader should believe and,
        for installs running in this process, live bytes, speed and ETA."""
        out = []
        reg = self.registry.read()
        for key, rec in sorted(reg.installs.items()):
            if model_id is not None and rec.model_id != model_id:
                continue
            if version is not None and rec.version != version:
                continue
            update: dict[str, Any] = {"state": self._effective(rec)}
            staged = reg.updates.get(key)
            if staged is not None:
                update["update"] = self._update_status(key, staged)
            job = self.jobs.get(key)
            if job is not None and job.inst is not None:
                update.update(live_fields(job.inst, job.priority))
            out.append(rec.model_copy(update=update))
        return out

    def _update_status(self, key: str, staged: InstallRecord) -> UpdateStatus:
        job = self.jobs.get(job_key(staged.model_id, staged.version, update=True))
        if job is not None and job.inst is not None:
            return UpdateStatus(
                state=job.inst.state,  # type: ignore[arg-type]
                checksum_sha256=staged.checksum_sha256,
                bytes_total=job.inst.bytes_total,
                bytes_done=job.inst.bytes_done,
            )
        return UpdateStatus(
            state=self._effective(staged, update=True),  # type: ignore[arg-type]
            checksum_sha256=staged.checksum_sha256,
            bytes_total=staged.bytes_total,
            bytes_done=staged.bytes_done,
            error=staged.error,
        )

    def list_installed(self) -> list[InstallRecord]:
        """The ready versions."""
        return [r for r in self.status() if r.state == "ready"]

    async def astatus(
        self, model_id: str | None = None, version: str | None = None
    ) -> list[InstallRecord]:
        return self.status(model_id, version)

    # -- versions ----------------------------------------------------------------------
    async def resolve_version(self, model_id: str, version: str | None) -> str:
        """``version`` itself, or the hub's default_version; offline, the newest ready one."""
        safe_relpath(model_id, "model id")
        if version is not None:
            return safe_segment(version, "version")
        before = self.hub.offline_hits
        try:
            info = await self.hub.model(model_id)
        except (NotFoundError, BadManifestError):
            raise  # the hub answered: falling back to what is installed would hide it
        except HubError:
            newest = self._newest_ready(self.registry.read(), model_id)
            if newest is None:
                raise
            self._warn(f"hub unreachable: using {model_id}@{newest}, the newest installed")
            return newest
        if self.hub.offline_hits > before:
            newest = self._newest_ready(self.registry.read(), model_id)
            if newest is not None:
                return newest
        chosen = info.default_version or (
            max((v.version for v in info.versions), key=version_key) if info.versions else None
        )
        if chosen is None:
            raise NotFoundError(f"model {model_id} has no versions on the hub", model_id=model_id)
        return safe_segment(chosen, "version")

    # -- install -----------------------------------------------------------------------
    async def ainstall(
        self,
        model_id: str,
        version: str | None = None,
        *,
        priority: int = 0,
        wait: bool = True,
        force: bool = False,
    ) -> Path | None:
        """Install a version (``None``: the hub's default) and return its ready path.

        With ``wait=False`` the install is queued and ``None`` returned at once; if another
        process is installing it already, :class:`ModelNotAvailableError` ('downloading').
        Raises the install's error (with the version left ``error`` or resumable).
        """
        if is_hf_ref(model_id):
            return await self._ainstall_hf(model_id, version, priority, wait, force)
        self._ensure_started()
        if self._engine is None and self._engine_start is None:
            # Worker processes start while we talk to the hub, not after.
            self._engine_start = asyncio.ensure_future(self._get_engine())
            self._engine_start.add_done_callback(lambda f: f.cancelled() or f.exception())
        version = await self.resolve_version(model_id, version)
        key = install_key(model_id, version)
        job = self.jobs.get(key)
        if job is None:
            rec = self.registry.get(model_id, version)
            if not force and rec is not None and rec.state == "ready" and Path(rec.path).is_dir():
                return Path(rec.path)
            job = self.jobs.start(model_id, version, priority, wait=wait, force=force)
        elif priority != job.priority:
            self.jobs.set_priority(key, priority)
        if not wait:
            return None
        return await self.jobs.wait(job)

    async def _ainstall_hf(
        self, ref: str, revision: str | None, priority: int, wait: bool, force: bool
    ) -> Path | None:
        """``hf://REPO[@REV]``: version = the revision's commit sha, the name kept as alias."""
        rev = await self.hf.resolve(ref, revision)
        path = await self.ainstall(rev.repo, rev.sha, priority=priority, wait=wait, force=force)
        job = self.jobs.get(install_key(rev.repo, rev.sha))
        if job is not None and not job.done.done():

            def recorded(f: asyncio.Future[Path]) -> None:
                if not f.cancelled() and f.exception() is None:
                    self.hf.record(self.registry, rev)

            job.done.add_done_callback(recorded)
        else:
            self.hf.record(self.registry, rev)
        return path

    def install(
        self, model_id: str, version: str | None = None, *, priority: int = 0, wait: bool = True
    ) -> Path | None:
        """Blocking :meth:`ainstall` (a background install stops when it returns)."""
        return self._run(self.ainstall(model_id, version, priority=priority, wait=wait))

    # -- staged updates ----------------------------------------------------------------
    def _recover_updates(self) -> None:
        """At start-up: finish swaps whose process died between the swap and the record."""
        for key, staged in self.registry.read().updates.items():
            if staged.swap_ino is None:
                continue
            if staged.owner_pid is not None and self._owner_alive(
                staged.owner_pid, staged.owner_start
            ):
                continue
            name = task_lock_name(staged.model_id, staged.version)
            try:
                held = self.locks.try_acquire(
                    name,
                    kind="task",
                    model_id=staged.model_id,
                    version=staged.version,
                    timeout_s=60,
                )
            except LockBusy:
                continue  # its owner is alive and will finish it
            try:
                with contextlib.suppress(OSError, AccelError):
                    self.staged.finish_swap(key)
            finally:
                held.release()

    # -- control -----------------------------------------------------------------------
    async def apause(self, model_id: str, version: str | None = None) -> None:
        """Stop an install, keeping every byte fetched; :meth:`aresume` continues it."""
        for key, rec in self._matching(model_id, version):
            if await self.jobs.cancel(key):
                continue
            if rec is not None and rec.state in ("queued", "error"):

                def change(reg: Registry, key: str = key) -> None:
                    if key in reg.installs:
                        reg.installs[key].state = "paused"

                self.registry.update(change)
                self._state(rec.model_id, rec.version, "paused")

    async def aresume(self, model_id: str, version: str | None = None) -> None:
        """Queue a paused (or failed) install or update again; fetched bytes are kept."""
        for _key, rec in self._matching(model_id, version):
            if rec is not None and rec.state != "ready":
                await self.ainstall(rec.model_id, rec.version, priority=rec.priority, wait=False)
        for staged in self._stopped_updates(model_id, version):
            with contextlib.suppress(ModelNotAvailableError):  # running elsewhere
                await self.aupdate_version(
                    staged.model_id, staged.version, priority=staged.priority, wait=False
                )

    def _stopped_updates(self, model_id: str, version: str | None) -> list[InstallRecord]:
        return [
            r
            for k, r in self.registry.read().updates.items()
            if r.model_id == model_id
            and (version is None or r.version == version)
            and job_key(r.model_id, r.version, update=True) not in self.jobs
            and self._effective(r, update=True) in ("paused", "error")
        ]

    async def aretry(self, model_id: str, version: str | None = None) -> None:
        """Fetch again only the files of a failed install that are missing or bad."""
        await self.aresume(model_id, version)

    async def aset_priority(self, model_id: str, version: str | None, priority: int) -> None:
        """Give an unfinished install ``priority``: a queued one moves in the queue, a
        running one keeps it in every later registry write, and the registry record
        (what status shows, what resume re-queues with) takes it at once."""
        keys = set()
        for key, rec in self._matching(model_id, version):
            if rec is not None and rec.state == "ready":
                continue
            keys.add(key)
            self.jobs.set_priority(key, priority)

        def change(reg: Registry) -> None:
            for key in keys:
                rec = reg.installs.get(key)
                if rec is not None and rec.state != "ready":
                    rec.priority = priority

        if keys:
            await asyncio.to_thread(self.registry.update, change)

    def _matching(
        self, model_id: str, version: str | None
    ) -> list[tuple[str, InstallRecord | None]]:
        reg = self.registry.read()
        keys = {
            k: r
            for k, r in reg.installs.items()
            if r.model_id == model_id and (version is None or r.version == version)
        }
        for job in self.jobs:
            if job.model_id == model_id and (version is None or job.version == version):
                keys.setdefault(job.key, None)  # type: ignore[arg-type]
        return list(keys.items())  # type: ignore[arg-type]

    def pause(self, model_id: str, version: str | None = None) -> None:
        """Blocking :meth:`apause`."""
        self._run(self.apause(model_id, version))

    def resume(self, model_id: str, version: str | None = None) -> None:
        """Blocking resume: runs the install (or staged update) to its end."""
        for _key, rec in self._matching(model_id, version):
            if rec is not None and rec.state != "ready":
                self.install(rec.model_id, rec.version, priority=rec.priority)
        for staged in self._stopped_updates(model_id, version):
            self._run(self.aupdate_version(staged.model_id, staged.version))

    def retry(self, model_id: str, version: str | None = None) -> None:
        """Blocking retry: runs the install to its end."""
        self.resume(model_id, version)

    # -- remove / verify / update ------------------------------------------------------
    async def aremove(self, model_id: str, version: str | None = None) -> list[str]:
        """Remove a version (or every version of a model); returns the removed keys."""
        removed = []
        matching = self._matching(model_id, version)
        for key, _rec in matching:  # installs and staged updates of this process stop first
            await self.jobs.cancel(key)
        for key, rec in matching:
            if rec is None:
                continue
            name = task_lock_name(rec.model_id, rec.version)
            try:
                held = self.locks.try_acquire(
                    name, kind="task", model_id=rec.model_id, version=rec.version, timeout_s=60
                )
            except LockBusy as busy:
                raise ModelNotAvailableError(
                    rec.model_id,
                    rec.version,
                    "downloading",
                    message=f"cannot remove {key}: it is being installed by "
                    f"{describe_holder(busy.holder)}",
                    hint="pause it there first, or wait for it to finish",
                ) from None
            try:

                def change(reg: Registry, key: str = key) -> None:
                    reg.installs.pop(key, None)
                    reg.updates.pop(key, None)

                self.registry.update(change)
                self._delete_dir(Path(rec.path))
                self.staged.drop(key)
                from accel.manager.manifests import ManifestStore  # (a peer server's record)

                ManifestStore(self.state_dir).drop(rec.model_id, rec.version)
            finally:
                held.release()
            log.info("removed %s", key, extra={"key": key})
            self.events.publish(RemovedEvent(model_id=rec.model_id, version=rec.version))
            removed.append(key)
        return removed

    def remove(self, model_id: str, version: str | None = None) -> list[str]:
        """Blocking :meth:`aremove`."""
        return self._run(self.aremove(model_id, version))

    def _delete_dir(self, path: Path) -> None:
        if not path.is_dir() or not path.resolve().is_relative_to(self.models_dir):
            return
        self.staged.trash(path)  # the version disappears at once, then is deleted
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the model dir, if it has no other version

    async def averify(
        self, model_id: str | None = None, version: str | None = None
    ) -> dict[str, list[str]]:
        """Re-hash every file of ready versions; damaged files are deleted and the version
        set to ``error`` so :meth:`retry` fetches just them. Returns key -> bad files."""
        results: dict[str, list[str]] = {}
        for rec in self.status(model_id, version):
            if rec.state != "ready":
                continue
            key = install_key(rec.model_id, rec.version)
            checks = [
                (f.path, Path(rec.path) / safe_relpath(f.path), f.sha256, f.bytes_total)
                for f in rec.files
            ]
            bad = await asyncio.to_thread(_find_bad, checks)
            results[key] = bad
            if bad:
                self._mark_damaged(key, bad)
        return results

    def verify(
        self, model_id: str | None = None, version: str | None = None
    ) -> dict[str, list[str]]:
        """Blocking :meth:`averify`."""
        return self._run(self.averify(model_id, version))

    def _mark_damaged(self, key: str, bad: list[str]) -> None:
        def change(reg: Registry) -> None:
            rec = reg.installs[key]
            for f in rec.files:
                if f.path in bad:
                    f.state, f.bytes_done = "error", 0
                    f.error = FileError(code="checksum_mismatch", message="damaged on disk")
                    with contextlib.suppress(OSError):
                        (Path(rec.path) / safe_relpath(f.path)).unlink()
            rec.state = "error"
            rec.bytes_done = sum(f.bytes_done for f in rec.files)
            rec.error = FileError(
                code="checksum_mismatch", message=f"damaged on disk: {', '.join(bad)}"
            )

        self.registry.update(change)
        log.warning("verify found damage in %s: %s", key, bad, extra={"key": key})

    async def aupdate(self) -> list[str]:
        """Bring every installed model up to date with the hub, fetching only what changed.

        A new ``default_version`` is installed beside the old one (identical files are
        linked from it, and it stays usable). An installed version whose checksum changed
        on the hub is updated in a staging directory: unchanged files are hard-linked from
        the ready version, only files whose sha256 differs are fetched, and the ready
        version stays usable at its path until the new content is verified and swapped
        into place in one step; ``ready`` (with ``update=True``) is announced then. An
        unchanged model costs one catalog request, revalidated with If-None-Match (a
        304). Returns the keys installed or updated.
        """
        done: list[str] = []
        reg = self.registry.read()
        for source, revision, endpoint in HfInstalls.installed_refs(reg):
            # An hf:// install follows its revision name: a new commit is a new version.
            rev = await self.hf.resolve(source, revision, recorded_endpoint=endpoint)
            if install_key(rev.repo, rev.sha) not in reg.installs:
                await self._ainstall_hf(source, revision, 0, True, False)
                done.append(install_key(rev.repo, rev.sha))
        hf_models = {r.model_id for r in reg.installs.values() if r.source}
        models = sorted(
            {r.model_id for r in reg.installs.values() if r.state == "ready"} - hf_models
        )
        for model_id in models:
            info = await self.hub.model(model_id, revalidate=True)  # a 304 when unchanged
            ready = {
                r.version: r
                for r in reg.installs.values()
                if r.model_id == model_id and r.state == "ready"
            }
            target = info.default_version
            if target is not None and target not in ready:
                await self.ainstall(model_id, target)
                done.append(install_key(model_id, target))
            for v in info.versions:
                rec = ready.get(v.version)
                if rec is not None and rec.checksum_sha256 != v.checksum_sha256:
                    self.hub.expire(model_id, v.version)
                    await self.aupdate_version(model_id, v.version)
                    done.append(install_key(model_id, v.version))
        return done

    async def aupdate_version(
        self, model_id: str, version: str, *, priority: int = 0, wait: bool = True
    ) -> Path | None:
        """Update one installed version to the hub's current content, staged beside it.

        The ready version stays usable until the update is verified and swapped in;
        a version that is not ready is simply installed. Returns the ready path (or
        ``None`` with ``wait=False``).
        """
        self._ensure_started()
        version = safe_segment(version, "version")
        job = self.jobs.get(job_key(model_id, version, update=True))
        if job is None:
            job = self.jobs.start(model_id, version, priority, wait=wait, staged=True)
        if not wait:
            return None
        return await self.jobs.wait(job)

    def update(self) -> list[str]:
        """Blocking :meth:`aupdate`."""
        return self._run(self.aupdate())

    # -- maintenance -------------------------------------------------------------------
    def cleanup_locks(self) -> list[tuple[str, str]]:
        """Remove lock records of dead holders (pid gone or reused) and any over an hour
        old, and temp files of dead registry writers. Lock files stay in place."""
        removed = self.locks.cleanup()
        self.registry.cleanup_temp()
        self._recover_updates()
        self.staged.sweep_trash()
        for name, why in removed:
            log.info("removed stale lock record %s (%s)", name, why, extra={"lock": name})
        return removed

    def lock_records(self) -> list[dict[str, Any]]:
        """Every lock record with its holder's status (for ``accel locks``)."""
        out = []
        now = time.time()
        for name, record in self.locks.records():
            from accel.manager.locks import holder_status

            item: dict[str, Any] = {"name": name}
            if record is None:
                item["status"] = "unreadable"
            else:
                item.update(record.model_dump())
                item["status"] = holder_status(
                    record,
                    now=now,
                    hostname=self.locks.hostname,
                    start_time_of=process_start_time,
                )
                item["heartbeat_age_s"] = round(now - record.heartbeat_at, 1)
            out.append(item)
        return out

    def export_logs(self, path: str | os.PathLike[str]) -> Path:
        """One ``tar.gz`` with the logs, the registry and the lock records."""
        return logs_mod.export_logs(self.models_dir, Path(path))

    # -- queue introspection -----------------------------------------------------------
    def queued(self) -> list[str]:
        """Keys waiting for an install slot, in the order they will start."""
        return self.jobs.queued()

    async def wait_idle(self) -> None:
        """Wait until no install of this manager is running or queued."""
        await self.jobs.wait_idle()


def _find_bad(checks: list[tuple[str, Path, str, int]]) -> list[str]:
    bad = []
    for rel, path, sha, size in checks:
        try:
            ok = path.stat().st_size == size and hash_file(path) == sha
        except OSError:
            ok = False
        if not ok:
            bad.append(rel)
    return bad
