"""Fault: an exception raised at each stage of a job (the job runner, accel/manager/jobs.py).

The real function of each stage (the hub answer, planning, fetching, verifying, the swap
of a staged update, a registry write) is patched to raise once; whatever it raises, the
job ends ``error`` with a stable code, one ``failed`` event goes out, the waiter raises
within seconds, ``registry.json`` stays valid JSON, no job or lock is left behind (a
rerun without the fault is ready), and no exception is left in a task nobody awaited
(the autouse fixture of conftest.py). Before the job runner, anything but an
``AccelError`` or ``OSError`` left the waiter hanging forever.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from accel.errors import AccelError
from accel.manager import ModelManager
from accel.manager import hubclient as hubclient_mod
from accel.manager import staging as staging_mod
from accel.manager.events import Event
from accel.manager.install import VersionInstall
from accel.manager.registry import RegistryStore
from accel.schema import Registry
from tests.manager.badhub import FILES, MODEL, VERSION, BadHub, running_bad_hub

DEADLINE_S = 10.0
KEY = f"{MODEL}@{VERSION}"

#: what each raised exception becomes: a bug is ``internal``; an OSError in the models
#: dir the filesystem error of its errno (EACCES here: ``permission_denied``); the hub seam and a file's fetch translate their own
EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "RuntimeError": lambda: RuntimeError("injected"),
    "ValueError": lambda: ValueError("injected"),
    "OSError": lambda: PermissionError(13, "Permission denied (injected)", "/injected"),
}
CODES = {
    ("hub_answer", "ValueError"): "hub_error",
    ("hub_answer", "OSError"): "hub_error",
    ("fetch", "OSError"): "download_failed",
}


@pytest.fixture
async def bad_hub(tmp_path: Path) -> AsyncIterator[BadHub]:
    async with running_bad_hub(tmp_path / "store") as hub:
        yield hub


def _once(exc: Callable[[], BaseException], real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, except that its first call raises ``exc()``."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exc()
        return real(*args, **kwargs)

    return wrapper


def _once_async(exc: Callable[[], BaseException], real: Callable[..., Any]) -> Callable[..., Any]:
    sync = _once(exc, lambda *a, **k: None)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        sync()
        return await real(*args, **kwargs)

    return wrapper


def _inject(monkeypatch: pytest.MonkeyPatch, stage: str, exc: Callable[[], BaseException]) -> None:
    if stage == "hub_answer":
        monkeypatch.setattr(hubclient_mod, "_http_get", _once(exc, hubclient_mod._http_get))
    elif stage == "planning":
        monkeypatch.setattr(VersionInstall, "prepare", _once(exc, VersionInstall.prepare))
    elif stage == "fetch":
        monkeypatch.setattr(
            VersionInstall, "_fetch_file", _once_async(exc, VersionInstall._fetch_file)
        )
    elif stage == "verify":
        monkeypatch.setattr(VersionInstall, "verify_all", _once(exc, VersionInstall.verify_all))
    elif stage == "swap":
        monkeypatch.setattr(staging_mod, "exchange_dirs", _once(exc, staging_mod.exchange_dirs))
    elif stage == "registry_write":
        real = RegistryStore._write

        def write(self: RegistryStore, reg: Registry) -> None:
            rec = reg.installs.get(KEY)
            if rec is not None and rec.state == "downloading" and not getattr(write, "done", 0):
                write.done = 1  # type: ignore[attr-defined]
                raise exc()
            real(self, reg)

        monkeypatch.setattr(RegistryStore, "_write", write)
    else:  # pragma: no cover
        raise AssertionError(stage)


@pytest.mark.parametrize("exc_name", sorted(EXCEPTIONS))
@pytest.mark.parametrize(
    "stage", ["hub_answer", "planning", "fetch", "verify", "swap", "registry_write"]
)
async def test_an_exception_at_any_stage_ends_the_job_in_error(
    bad_hub: BadHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    exc_name: str,
) -> None:
    models = tmp_path / "models"
    events: list[Event] = []
    async with ModelManager(models, bad_hub.url, workers=1, retry_backoff_s=0.01) as mm:
        if stage == "swap":  # an update of a ready version, staged beside it
            old = await mm.ainstall(MODEL, VERSION)
            assert old is not None
            bad_hub.publish({**FILES, "a.bin": b"new content" * 100})
            mm.hub.expire(MODEL, VERSION)  # as `aupdate` does for a changed checksum
        mm.subscribe(events.append)
        _inject(monkeypatch, stage, EXCEPTIONS[exc_name])
        started = time.monotonic()
        with pytest.raises(AccelError) as info:
            async with asyncio.timeout(DEADLINE_S):
                if stage == "swap":
                    await mm.aupdate_version(MODEL, VERSION)
                else:
                    await mm.ainstall(MODEL, VERSION)
        assert time.monotonic() - started < DEADLINE_S
        err = info.value
        assert err.code == CODES.get(
            (stage, exc_name), "internal" if exc_name != "OSError" else "permission_denied"
        ), err
        if err.code == "internal":
            assert "injected" in err.message and "injected" in str(err.__cause__)
            assert isinstance(err.__cause__, EXCEPTIONS[exc_name]().__class__)
        failed = [e for e in events if e.type == "failed"]
        assert len(failed) == 1 and failed[0].error.code == err.code, events
        reg = json.loads((models / "registry.json").read_text())  # valid JSON
        if stage == "swap":
            # The update failed; the ready version stays ready, with its old content.
            assert reg["installs"][KEY]["state"] == "ready"
            assert reg["updates"][KEY]["state"] == "error"
            assert reg["updates"][KEY]["error"]["code"] == err.code
            assert (mm.get_model_path(MODEL, VERSION) / "a.bin").read_bytes() == FILES["a.bin"]
        else:
            assert reg["installs"][KEY]["state"] == "error", reg
            assert reg["installs"][KEY]["error"]["code"] == err.code, reg
            assert mm.status(MODEL)[0].state == "error"
        assert not mm.jobs and mm.queued() == []
        # Nothing is left held: without the fault, a rerun finishes.
        monkeypatch.undo()
        if stage == "swap":
            path = await mm.aupdate_version(MODEL, VERSION)
            assert path is not None and (path / "a.bin").read_bytes() == b"new content" * 100
        else:
            path = await mm.ainstall(MODEL, VERSION)
            assert path is not None and (path / "a.bin").read_bytes() == FILES["a.bin"]
