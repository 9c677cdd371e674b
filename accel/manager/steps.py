"""The steps of one install job, in order, as the job runner runs them.

The task lock (held at once, or waited for), the manifest from the hub (for a staged
update: whether there is anything to update, and where to build it), the plan merged
with what the registry records, the queue slot, then the install itself: reuse, space
check, fetch, verify, the swap of a staged update, ``ready``. Each step raises whatever
stops it; what that means for the job (its state, its event, its waiter) is decided
by :meth:`~accel.manager.jobs.JobRunner._run` alone, never here. Never prints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from accel.errors import InsufficientDiskSpaceError, ModelNotAvailableError
from accel.manager.events import ReadyEvent, ResumeEvent
from accel.manager.install import VersionInstall, summarize
from accel.manager.locks import task_lock_name
from accel.manager.manifests import ManifestStore
from accel.schema import FileError, VersionManifest

if TYPE_CHECKING:
    from accel.manager.jobs import Job, JobRunner

__all__ = ["run_steps"]

log = logging.getLogger("accel.manager")


async def run_steps(runner: JobRunner, job: Job) -> Path:
    """Every step of ``job``, in order; returns the ready path (see the module docstring)."""
    if job.lock is None:
        job.lock = await runner.locks.acquire(
            task_lock_name(job.model_id, job.version),
            kind="task",
            model_id=job.model_id,
            version=job.version,
            timeout_s=runner.settings.task_lock_timeout_s,
        )
    staging: Path | None = None
    if job.staged:
        manifest = await _manifest(runner, job)
        plan = await asyncio.to_thread(
            runner.staged.begin, job.model_id, job.version, manifest.checksum_sha256
        )
        if plan == "up_to_date":
            return runner.staged.final_dir(job.model_id, job.version)
        if plan == "in_place":  # not ready: nothing to keep usable
            job.staged, job.force = False, True
        else:
            staging = plan
    else:
        rec = runner.registry.get(job.model_id, job.version)
        ready = rec is not None and rec.state == "ready" and Path(rec.path).is_dir()
        if ready and not job.force:
            assert rec is not None
            return Path(rec.path)  # installed by the process we waited for
        manifest = await _manifest(runner, job)
    s = runner.settings
    inst = VersionInstall(
        models_dir=s.models_dir,
        registry=runner.registry,
        locks=runner.locks,
        engine=await runner.engine(),
        url_of=_url_of(runner, job),
        headers=_headers(runner, job),
        mirrors_of=_mirrors_of(manifest),
        peers_of=_peers_of(runner, job, manifest),
        peer_headers=runner.peers.headers if runner.peers is not None else None,
        manifest=manifest,
        priority=job.priority,
        max_parallel_files=s.max_parallel_files,
        file_retries=s.file_retries,
        on_change=lambda _i: runner.emit_progress(job),
        retry_backoff_s=s.retry_backoff_s,
        file_lock_timeout_s=s.file_lock_timeout_s,
        owner_start=runner.locks.start_time,
        staging=staging,
    )
    job.inst = inst
    inst.prepare()
    if staging is None:
        # Kept before the first byte: a peer server reads it for the blocks in flight.
        await asyncio.to_thread(ManifestStore(runner.staged.state_dir).save, manifest)
    inst.save("queued")
    runner.publish_state(job, "queued")
    await runner.slots.acquire(job.key, job.priority)
    try:
        return await _install(runner, job, inst)
    finally:
        runner.slots.release()


async def _manifest(runner: JobRunner, job: Job) -> VersionManifest:
    """The version's manifest: from its HF endpoint for an ``hf://`` version, else the hub."""
    hf = runner.hf.manifest(job.model_id, job.version) if runner.hf else None
    return hf if hf is not None else await runner.hub.manifest(job.model_id, job.version)


def _url_of(runner: JobRunner, job: Job) -> Callable[[str], str]:
    hf = runner.hf.url_of(job.model_id, job.version) if runner.hf else None
    return hf or (lambda p: runner.hub.storage_url(job.model_id, job.version, p))


def _headers(runner: JobRunner, job: Job) -> dict[str, str]:
    """The credentials of this version's own source: an ``hf://`` version's endpoint
    token (or none), else the hub's, each for its own origin only."""
    hf = runner.hf.headers(job.model_id, job.version) if runner.hf else None
    if hf is not None:
        return hf
    return runner.hub.headers  # its /storage URLs are at the hub's own origin


def _peers_of(
    runner: JobRunner, job: Job, manifest: VersionManifest
) -> Callable[[str], Awaitable[list[str]]] | None:
    """A file's URLs at the version's peers (accel.manager.peers), asked as the file
    starts; none for an ``hf://`` version (no blake3 blocks to check a peer's bytes)."""
    finder = runner.peers
    if finder is None or not finder.enabled:
        return None
    if runner.hf is not None and runner.hf.manifest(job.model_id, job.version) is not None:
        return None
    model_id, version = manifest.model_id, manifest.version

    async def urls(path: str) -> list[str]:
        return await finder.urls(model_id, version, path)

    return urls


def _mirrors_of(manifest: VersionManifest) -> Callable[[str], list[str]] | None:
    """A file's URLs at the version's mirrors: ``{base}/{path}``, the manifest path
    percent-encoded per segment (the engine holds each to the manifest's digests)."""
    bases = [b.rstrip("/") for b in manifest.mirrors]
    if not bases:
        return None

    def urls(path: str) -> list[str]:
        tail = "/".join(quote(seg, safe="") for seg in path.split("/"))
        return [f"{b}/{tail}" for b in bases]

    return urls


async def _install(runner: JobRunner, job: Job, inst: VersionInstall) -> Path:
    inst.save("downloading")
    runner.publish_state(job, "downloading")
    log.info("installing %s (%d files)", job.key, len(inst.files), extra={"key": job.key})
    inst.adopt_finished()
    inst.bytes_kept = inst.kept_bytes()
    inst.reuse_identical()
    if inst.bytes_kept or inst.bytes_reused:
        runner.events.publish(
            ResumeEvent(
                model_id=job.model_id,
                version=job.version,
                bytes_total=inst.bytes_total,
                bytes_kept=inst.bytes_kept,
                bytes_reused=inst.bytes_reused,
                bytes_to_fetch=max(0, inst.bytes_total - inst.bytes_kept - inst.bytes_reused),
                update=job.staged,
            )
        )
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
    runner.publish_state(job, "verifying")
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
        swap = asyncio.ensure_future(asyncio.to_thread(runner.staged.swap_in, inst))
        try:
            await asyncio.shield(swap)
        except asyncio.CancelledError as exc:
            await swap
            cancelled = exc
        inst.state = "ready"
        # Now the ready directory holds this manifest's files (see manifests.py).
        await asyncio.to_thread(ManifestStore(runner.staged.state_dir).save, inst.manifest)
    else:
        inst.save("ready")
    runner.emit_progress(job, force=True)
    facts = summarize(inst)
    path = inst.final_dir
    log.info("ready %s at %s", job.key, path, extra={"key": job.key, **facts})
    runner.events.publish(
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
