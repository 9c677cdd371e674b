"""Fault: a hub whose answers do not match the schema (fake hub on loopback).

Every malformed manifest or catalog entry, generated from the pydantic schema with
hypothesis (a required field missing, a wrong type, numbers out of range, hostile and
duplicate paths, bodies that are not JSON), ends the install within seconds with one
clear error: ``bad_manifest`` naming the field, the version recorded ``error``, a
``failed`` event, and nothing written outside the models dir. Before the job runner, a
manifest without ``model_id`` left ``accel install`` waiting forever.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from accel.errors import AccelError
from accel.fetch import Engine
from accel.manager import ModelManager
from accel.manager.events import Event
from tests.manager.badhub import (
    ABSOLUTE,
    MODEL,
    VERSION,
    BadHub,
    Case,
    catalog_case,
    good_manifest,
    manifest_case,
    running_bad_hub,
)

#: every install must end within this (the issue's bound)
DEADLINE_S = 10.0

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def bad_hub(tmp_path: Path) -> AsyncIterator[BadHub]:
    async with running_bad_hub(tmp_path / "store") as hub:
        yield hub


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """One engine for every example (worker processes start once, not per install)."""
    eng = Engine(workers=1)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.aclose()


def _outside_tree(case: Path) -> list[str]:
    """Everything under ``case`` that is not the models dir."""
    return sorted(str(p.relative_to(case)) for p in case.rglob("*") if "models" not in p.parts)


async def _install(
    hub: BadHub, engine: Engine, root: Path, case: Case, *, version: str | None = VERSION
) -> tuple[AccelError, list[Event], Path, float]:
    """Install ``m`` (fresh models dir) against ``case``'s answer; returns its error."""
    where = Path(tempfile.mkdtemp(dir=root))
    raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    raw = raw.replace(ABSOLUTE.encode(), str(where / "absolute-escape").encode())
    hub.answer(raw, catalog=version is None)
    events: list[Event] = []
    models = where / "models"
    async with ModelManager(models, hub.url, engine=engine, retry_backoff_s=0.01) as mm:
        mm.subscribe(events.append)
        started = time.monotonic()
        with pytest.raises(AccelError) as info:
            async with asyncio.timeout(DEADLINE_S):
                await mm.ainstall(MODEL, version)
        elapsed = time.monotonic() - started
    assert _outside_tree(where) == [], case
    return info.value, events, models, elapsed


def _check_recorded(err: AccelError, events: list[Event], models: Path, case: Case) -> None:
    reg = json.loads((models / "registry.json").read_text())  # still valid JSON
    rec = reg["installs"][f"{MODEL}@{VERSION}"]
    assert rec["state"] == "error" and rec["error"]["code"] == err.code, (case, rec)
    failed = [e for e in events if e.type == "failed"]
    assert len(failed) == 1 and failed[0].error.code == err.code, (case, events)
    assert not any(e.type == "ready" for e in events)


async def test_the_untouched_manifest_installs(
    bad_hub: BadHub, engine: Engine, tmp_path: Path
) -> None:
    """The fake hub is a working hub: without a fault, the install is ready."""
    async with ModelManager(tmp_path / "models", bad_hub.url, engine=engine) as mm:
        path = await mm.ainstall(MODEL, VERSION)
    assert path is not None and (path / "sub" / "b.bin").read_bytes() == b"accel" * 300


async def test_a_manifest_without_model_id_fails_at_once_instead_of_hanging(
    bad_hub: BadHub, engine: Engine, tmp_path: Path
) -> None:
    """The issue's case, exactly: the install used to wait forever."""
    body = good_manifest()
    del body["model_id"]
    err, events, models, elapsed = await _install(
        bad_hub, engine, tmp_path, Case("missing", body, "model_id")
    )
    assert err.code == "bad_manifest"
    assert err.facts["field"] == "model_id" and err.facts["version"] == VERSION
    assert "model_id" in str(err) and f"{MODEL}@{VERSION}" in str(err) and err.hint
    assert elapsed < DEADLINE_S
    _check_recorded(err, events, models, Case("missing", body, "model_id"))
    assert not (models / MODEL).exists()  # nothing of it was installed


@EXAMPLES
@given(case=manifest_case())
async def test_every_malformed_manifest_ends_in_a_clear_error(
    bad_hub: BadHub, engine: Engine, tmp_path: Path, case: Case
) -> None:
    err, events, models, elapsed = await _install(bad_hub, engine, tmp_path, case)
    assert err.code in case.codes, (case, err)
    if case.field is not None:
        assert err.facts["field"] == case.field, (case, err)
        assert err.facts["model_id"] == MODEL and err.facts["version"] == VERSION
        assert "\n" not in str(err)
    if err.code == "bad_manifest":
        assert not (models / MODEL).exists(), case  # refused before planning
        assert not any(p.startswith("/storage/") for p in bad_hub.requests), case
    assert elapsed < DEADLINE_S
    _check_recorded(err, events, models, case)
    bad_hub.requests.clear()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=catalog_case())
async def test_every_malformed_catalog_entry_fails_the_install_at_once(
    bad_hub: BadHub, engine: Engine, tmp_path: Path, case: Case
) -> None:
    """``install m`` asks the catalog for the default version first."""
    err, _events, models, elapsed = await _install(bad_hub, engine, tmp_path, case, version=None)
    assert err.code == "bad_manifest" and err.facts["field"] == case.field, (case, err)
    assert err.facts["model_id"] == MODEL and elapsed < DEADLINE_S
    assert not (models / MODEL).exists()


async def test_a_bad_answer_is_not_cached_and_a_fixed_hub_installs(
    bad_hub: BadHub, engine: Engine, tmp_path: Path
) -> None:
    """The next install asks again (a TTL must not keep a broken answer alive)."""
    body = good_manifest()
    body["files"][0]["size_bytes"] = -1
    bad_hub.answer(body)
    async with ModelManager(tmp_path / "models", bad_hub.url, engine=engine) as mm:
        with pytest.raises(AccelError, match="size_bytes"):
            await mm.ainstall(MODEL, VERSION)
        bad_hub.answer(good_manifest())
        path = await mm.ainstall(MODEL, VERSION)
        assert path is not None and mm.status(MODEL)[0].state == "ready"


async def test_cli_install_against_a_malformed_hub_prints_one_error_line(
    bad_hub: BadHub, tmp_path: Path
) -> None:
    body = good_manifest()
    del body["model_id"]
    bad_hub.answer(body)
    env = dict(os.environ, ACCEL_MODELS_DIR=str(tmp_path / "models"), ACCEL_HUB=bad_hub.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "accel",
        "install",
        f"{MODEL}@{VERSION}",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):  # process start-up included; the install is < 10 s
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, (out, err)
    # The progress display's own "failed m@1.0: ..." line may come first (accel/_cli).
    errors = [line for line in err.decode().splitlines() if line.startswith("accel: error")]
    assert len(errors) == 1 and errors[0].startswith("accel: error [bad_manifest]: "), err
    assert "model_id" in errors[0] and "Traceback" not in err.decode()


async def test_the_blocking_install_raises_too(bad_hub: BadHub, tmp_path: Path) -> None:
    """``install(wait=True)``, the sync wrapper (in a thread: the hub runs on this loop)."""
    body = good_manifest()
    body["files"][1]["path"] = "../../escape"
    bad_hub.answer(body)
    mm = ModelManager(tmp_path / "models", bad_hub.url, workers=1)
    try:
        with pytest.raises(AccelError) as info:
            async with asyncio.timeout(DEADLINE_S):
                await asyncio.to_thread(mm.install, MODEL, VERSION)
    finally:
        await asyncio.to_thread(mm.close)
    assert info.value.code == "bad_manifest" and info.value.facts["field"] == "files[1].path"
    assert not (tmp_path / "escape").exists()
