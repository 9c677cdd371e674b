"""The job guard: run a job only when its model is ready, otherwise tell the scheduler.

Owns the decision a node makes when the scheduler assigns a job: ask the model source
(a :class:`~accel.manager.ModelManager`, or anything with the same ``get_model_path`` and
``ainstall``) for the path; when it raises
:class:`~accel.errors.ModelNotAvailableError`, build a
:class:`~accel.schema.ModelNotAvailableMessage`, hand it to the reporter (which delivers
in the background, so the guard never waits on the scheduler) and, when configured,
queue the install without waiting for it. Never downloads anything itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from accel.errors import AccelError, ModelNotAvailableError
from accel.schema import Job, ModelNotAvailableMessage

__all__ = ["Admission", "JobGuard", "ModelSource", "should_queue_install"]

log = logging.getLogger("accel.node.guard")


class ModelSource(Protocol):
    """What the guard needs from a model manager."""

    def get_model_path(self, model_id: str, version: str | None = None) -> Path:
        """The ready path, or raise :class:`ModelNotAvailableError`."""
        ...

    async def ainstall(
        self, model_id: str, version: str | None = None, *, priority: int = 0, wait: bool = True
    ) -> Any:
        """Queue (``wait=False``) or run an install."""
        ...


class Reporter(Protocol):
    def report(self, message: ModelNotAvailableMessage) -> None: ...


def should_queue_install(reason: str, *, install_missing: bool) -> bool:
    """Whether the guard queues an install for a model in state ``reason``.

    Only an absent model is queued: ``queued``/``downloading``/``verifying`` are on
    their way already, ``paused`` was paused by a person (the guard does not overrule
    them) and ``error`` waits for an explicit retry so that a broken version is not
    refetched in a loop by every incoming job.
    """
    return install_missing and reason == "not_installed"


@dataclass(frozen=True)
class Admission:
    """The guard's answer: a path to run the job with, or the report that was sent."""

    job: Job
    path: Path | None
    report: ModelNotAvailableMessage | None = None

    @property
    def ok(self) -> bool:
        return self.path is not None


def _progress(err: ModelNotAvailableError) -> float:
    value = err.facts.get("progress")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(1.0, max(0.0, float(value)))
    return 0.0


class JobGuard:
    """Check each job's model before running it; report and optionally install if missing."""

    def __init__(
        self,
        source: ModelSource,
        reporter: Reporter | None,
        *,
        node_id: str,
        install_missing: bool = True,
        install_priority: int = 0,
    ) -> None:
        self.source = source
        self.reporter = reporter
        self.node_id = node_id
        self.install_missing = install_missing
        self.install_priority = install_priority

    async def admit(self, job: Job | Mapping[str, Any]) -> Admission:
        """Return the job's model path, or report MODEL_NOT_AVAILABLE and return why not."""
        job = job if isinstance(job, Job) else Job.model_validate(job)
        model_id, version = job.required_model_id, job.required_model_version
        try:
            # A manager's async variant resolves version None through the hub (cached),
            # so the report names the version the node would install.
            aget = getattr(self.source, "aget_model_path", None)
            if callable(aget):
                path = await aget(model_id, version)
            else:
                path = self.source.get_model_path(model_id, version)
        except ModelNotAvailableError as err:
            return await self._refuse(job, err)
        return Admission(job=job, path=Path(path))

    async def check(self, job: Job | Mapping[str, Any]) -> Path | None:
        """The model path for ``job``, or ``None`` after reporting to the scheduler."""
        return (await self.admit(job)).path

    def _live_progress(self, job: Job, err: ModelNotAvailableError) -> float:
        """The fraction on disk: live from ``status()`` when the source has it.

        The error's own figure comes from the registry, which an install updates at state
        changes; a manager's ``status()`` also knows the bytes of running transfers.
        """
        best = _progress(err)
        status = getattr(self.source, "status", None)
        if callable(status) and err.reason in ("downloading", "queued", "verifying", "paused"):
            try:
                records = status(job.required_model_id, err.version or job.required_model_version)
            except (AccelError, OSError) as exc:
                log.debug("status for progress failed: %s", exc)
                return best
            for rec in records if isinstance(records, list) else []:
                done = getattr(rec, "bytes_done", None)
                total = getattr(rec, "bytes_total", None)
                if isinstance(rec, Mapping):
                    done, total = rec.get("bytes_done"), rec.get("bytes_total")
                if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
                    best = max(best, min(1.0, max(0.0, done / total)))
        return best

    async def _refuse(self, job: Job, err: ModelNotAvailableError) -> Admission:
        queued = False
        detail = err.message
        if should_queue_install(err.reason, install_missing=self.install_missing):
            try:
                await self.source.ainstall(
                    job.required_model_id,
                    job.required_model_version,
                    priority=self.install_priority,
                    wait=False,
                )
                queued = True
            except AccelError as exc:
                # The report still goes out; it says why the install could not be queued.
                detail = f"{err.message}; install not queued: {exc.message}"
                log.warning("job %s: cannot queue install: %s", job.job_id, exc)
        message = ModelNotAvailableMessage(
            job_id=job.job_id,
            node_id=self.node_id,
            model_id=job.required_model_id,
            version=job.required_model_version or err.version,
            reason=err.reason,  # type: ignore[arg-type]
            progress=self._live_progress(job, err),
            install_queued=queued,
            detail=detail,
        )
        if self.reporter is not None:
            self.reporter.report(message)
        log.info(
            "job %s refused: %s@%s %s (install queued: %s)",
            job.job_id,
            job.required_model_id,
            message.version,
            err.reason,
            queued,
        )
        return Admission(job=job, path=None, report=message)
