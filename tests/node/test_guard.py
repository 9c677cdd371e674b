"""The job guard: decisions (pure) and reports reaching a real scheduler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accel.errors import ModelNotAvailableError, NotFoundError
from accel.node.guard import JobGuard, should_queue_install
from accel.node.reporter import Backoff, SchedulerReporter
from accel.node.transport import HttpTransport
from accel.schema import Job, ModelNotAvailableMessage
from tests.node.scheduler import Scheduler


class FakeSource:
    """A model source whose states the test sets (the seam's small fake)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.states: dict[str, tuple[str, float]] = {}
        self.installs: list[tuple[str, str | None, int, bool]] = []
        self.install_error: Exception | None = None

    def get_model_path(self, model_id: str, version: str | None = None) -> Path:
        state, progress = self.states.get(model_id, ("not_installed", 0.0))
        if state == "ready":
            return self.tmp / model_id / (version or "1.0")
        raise ModelNotAvailableError(model_id, version, state, progress=progress)

    async def ainstall(
        self, model_id: str, version: str | None = None, *, priority: int = 0, wait: bool = True
    ) -> Any:
        if self.install_error is not None:
            raise self.install_error
        self.installs.append((model_id, version, priority, wait))
        self.states[model_id] = ("queued", 0.0)


class ListReporter:
    def __init__(self) -> None:
        self.sent: list[ModelNotAvailableMessage] = []

    def report(self, message: ModelNotAvailableMessage) -> None:
        self.sent.append(message)


@pytest.mark.parametrize(
    ("reason", "install_missing", "expected"),
    [
        ("not_installed", True, True),
        ("not_installed", False, False),
        ("queued", True, False),
        ("downloading", True, False),
        ("verifying", True, False),
        ("paused", True, False),
        ("error", True, False),
    ],
)
def test_should_queue_install(reason: str, install_missing: bool, expected: bool) -> None:
    assert should_queue_install(reason, install_missing=install_missing) is expected


async def test_ready_model_gives_the_path_and_no_report(tmp_path: Path) -> None:
    src, rep = FakeSource(tmp_path), ListReporter()
    src.states["asr"] = ("ready", 1.0)
    guard = JobGuard(src, rep, node_id="n1")
    path = await guard.check(
        {"job_id": "j", "required_model_id": "asr", "required_model_version": "2.0"}
    )
    assert path == tmp_path / "asr" / "2.0"
    assert rep.sent == [] and src.installs == []


async def test_missing_model_is_reported_and_install_queued_without_waiting(
    tmp_path: Path,
) -> None:
    src, rep = FakeSource(tmp_path), ListReporter()
    guard = JobGuard(src, rep, node_id="n1", install_priority=5)
    adm = await guard.admit(Job(job_id="j1", required_model_id="mt", required_model_version="1"))
    assert not adm.ok and adm.path is None
    assert src.installs == [("mt", "1", 5, False)]
    (msg,) = rep.sent
    assert (msg.job_id, msg.node_id, msg.model_id, msg.version, msg.reason) == (
        "j1",
        "n1",
        "mt",
        "1",
        "not_installed",
    )
    assert msg.install_queued and msg.progress == 0.0
    # The next job for the same model finds it queued: reported, not queued twice.
    adm2 = await guard.admit(Job(job_id="j2", required_model_id="mt", required_model_version="1"))
    assert adm2.report is not None and adm2.report.reason == "queued"
    assert not adm2.report.install_queued and len(src.installs) == 1


async def test_downloading_model_reports_its_progress(tmp_path: Path) -> None:
    src, rep = FakeSource(tmp_path), ListReporter()
    src.states["asr"] = ("downloading", 0.4)
    assert (
        await JobGuard(src, rep, node_id="n").check({"job_id": "j", "required_model_id": "asr"})
        is None
    )
    assert rep.sent[0].reason == "downloading" and rep.sent[0].progress == pytest.approx(0.4)


async def test_install_that_cannot_be_queued_is_still_reported(tmp_path: Path) -> None:
    src, rep = FakeSource(tmp_path), ListReporter()
    src.install_error = NotFoundError("model 'ghost' is not on the hub")
    adm = await JobGuard(src, rep, node_id="n").admit({"job_id": "j", "required_model_id": "ghost"})
    assert adm.report is not None and not adm.report.install_queued
    assert "not on the hub" in (adm.report.detail or "")
    assert len(rep.sent) == 1


async def test_guard_reports_reach_a_real_scheduler_and_never_wait_for_it(
    tmp_path: Path,
) -> None:
    src = FakeSource(tmp_path)
    async with Scheduler() as sched:
        fast = Backoff(initial_s=0.05, max_s=0.2)
        async with SchedulerReporter(HttpTransport(sched.http_url), backoff=fast) as rep:
            guard = JobGuard(src, rep, node_id="node-7")
            assert await guard.check({"job_id": "job-42", "required_model_id": "tts"}) is None
            (got,) = await sched.wait_for(1)
    assert got.job_id == "job-42" and got.node_id == "node-7" and got.install_queued
    assert sched.raw[0]["type"] == "MODEL_NOT_AVAILABLE"
