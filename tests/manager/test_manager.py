"""ModelManager against a real hub on loopback: install, reasons, failure and retry,
manifest cache and offline use, reuse by hard link, update, pause/resume, verify,
remove, events and the logs archive."""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from accel.errors import HubError, IntegrityError, ModelNotAvailableError
from accel.manager import ModelManager, hubclient
from accel.manager.events import (
    FailedEvent,
    ProgressEvent,
    ReadyEvent,
    RemovedEvent,
    StateEvent,
    WarningEvent,
)
from accel.schema import Registry
from tests.manager.hubstub import StubHub, publish, republish_file, running_stub
from tests.support.wait import until

FILES = {"weights.bin": 2_500_000, "config.json": b'{"a": 1}', "tok/vocab.txt": 300_000}


def _mm(models_dir: Path, hub: StubHub | str | None, **kw: object) -> ModelManager:
    url = hub.url if isinstance(hub, StubHub) else hub
    kw.setdefault("workers", 2)
    kw.setdefault("retry_backoff_s", 0.05)
    return ModelManager(models_dir, url, **kw)  # type: ignore[arg-type]


async def test_install_fetches_each_byte_once_and_get_model_path_returns_it(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    manifest = publish(store, "asr", "1.0", FILES)
    async with _mm(models_dir, hub) as mm:
        events: list[object] = []
        mm.subscribe(events.append)
        path = await mm.ainstall("asr")
        assert path == models_dir / "asr" / "1.0"
        assert (path / "config.json").read_bytes() == b'{"a": 1}'
        assert (path / "tok" / "vocab.txt").stat().st_size == 300_000
        assert mm.get_model_path("asr") == path
        assert mm.get_model_path("asr", "1.0") == path
        assert [r.state for r in mm.list_installed()] == ["ready"]
        # a second install is answered from the registry: no new transfer
        before = hub.storage_bytes()
        assert await mm.ainstall("asr", "1.0") == path
        assert hub.storage_bytes() == before
    assert hub.storage_bytes() == manifest["size_bytes"]  # each byte sent once
    ready = [e for e in events if isinstance(e, ReadyEvent)]
    assert len(ready) == 1 and ready[0].path == str(path)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert progress and progress[-1].bytes_done == progress[-1].bytes_total
    # each event carries only the files that changed since the one before (the first all)
    assert progress[-1].total is not None
    assert {f.path for f in progress[0].files} == set(FILES)
    assert {f.path for e in progress for f in e.files} == set(FILES)
    reg = Registry.model_validate_json((models_dir / "registry.json").read_bytes())
    rec = reg.installs["asr@1.0"]
    assert rec.state == "ready" and rec.checksum_sha256 == manifest["checksum_sha256"]
    assert all(f.state == "done" for f in rec.files)
    assert not list(path.rglob("*.part*"))


async def test_every_get_model_path_reason(store: Path, hub: StubHub, models_dir: Path) -> None:
    publish(store, "m", "1", {"a.bin": 200_000})
    async with _mm(models_dir, hub) as mm:
        with pytest.raises(ModelNotAvailableError) as e:
            mm.get_model_path("m", "1")
        assert e.value.reason == "not_installed"
        await mm.ainstall("m", "1")
        from accel.manager.registry import install_key

        for state in ("queued", "downloading", "verifying", "paused", "error"):

            def change(reg: Registry, state: str = state) -> None:
                rec = reg.installs[install_key("m", "1")]
                rec.state = state  # type: ignore[assignment]
                rec.owner_pid = None

            mm.registry.update(change)
            with pytest.raises(ModelNotAvailableError) as e:
                mm.get_model_path("m", "1")
            assert e.value.reason == state

        # an active state whose owner process died reads as paused (resumable)
        def dead_owner(reg: Registry) -> None:
            rec = reg.installs["m@1"]
            rec.state, rec.owner_pid, rec.owner_start = "downloading", 2**22 + 12345, 1.0

        mm.registry.update(dead_owner)
        with pytest.raises(ModelNotAvailableError) as e:
            mm.get_model_path("m", "1")
        assert e.value.reason == "paused"


async def test_corrupt_store_file_fails_only_that_file_and_retry_fetches_only_it(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1", {"good1.bin": 400_000, "bad.bin": 300_000, "good2.bin": 100_000})
    bad = store / "models" / "m" / "1" / "files" / "bad.bin"
    original = bad.read_bytes()
    bad.write_bytes(b"X" * 1000 + original[1000:])  # corrupted in the hub's store
    async with _mm(models_dir, hub, file_retries=2) as mm:
        failed: list[FailedEvent] = []
        mm.subscribe(lambda ev: failed.append(ev) if isinstance(ev, FailedEvent) else None)
        with pytest.raises(IntegrityError):
            await mm.ainstall("m", "1")
        with pytest.raises(ModelNotAvailableError) as e:
            mm.get_model_path("m", "1")
        assert e.value.reason == "error" and e.value.failed_files == ["bad.bin"]
        assert failed and [f.path for f in failed[-1].failed_files] == ["bad.bin"]
        assert failed[-1].error.code == "checksum_mismatch"
        rec = mm.status("m", "1")[0]
        assert {f.path: f.state for f in rec.files} == {
            "good1.bin": "done",
            "bad.bin": "error",
            "good2.bin": "done",
        }
        assert not (models_dir / "m" / "1" / "bad.bin").exists()  # never published
        # the hub's copy is repaired; retry fetches only the missing file
        bad.write_bytes(original)
        before = hub.storage_bytes()
        await mm.aretry("m", "1")
        await mm.wait_idle()
        assert mm.get_model_path("m", "1") == models_dir / "m" / "1"
        assert hub.storage_bytes() - before == 300_000


async def test_missing_store_file_is_a_clear_error(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 100_000, "b.bin": 50_000})
    (store / "models" / "m" / "1" / "files" / "b.bin").unlink()
    async with _mm(models_dir, hub, file_retries=2) as mm:
        with pytest.raises(Exception) as e:
            await mm.ainstall("m", "1")
        rec = mm.status("m", "1")[0]
        assert rec.state == "error" and rec.error is not None
        assert "b.bin" in rec.error.message
        assert {f.path: f.state for f in rec.files} == {"a.bin": "done", "b.bin": "error"}
        assert getattr(e.value, "code", "")  # an AccelError with a code


class _Clock:
    """``time`` as accel.manager.hubclient sees it: the real clock plus what a test adds.

    The TTL test moves it instead of sleeping past a short TTL: with a 0.3 s TTL, a
    loaded machine could spend it between two calls meant to fall within it.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


async def test_manifest_cache_ttl_revalidation_and_offline_use(
    store: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(hubclient, "time", clock)
    publish(store, "m", "1", {"a.bin": 100_000})
    with running_stub(store) as hub:
        async with _mm(models_dir, hub, manifest_ttl_s=60) as mm:
            await mm.ainstall("m")
            await mm.resolve_version("m", None)
            n = hub.requests("/api/models/m")
            await mm.resolve_version("m", None)  # within the TTL: no request
            assert hub.requests("/api/models/m") == n
            clock.offset += 61
            await mm.resolve_version("m", None)  # expired: revalidated with If-None-Match
            assert hub.requests("/api/models/m") == n + 1
            assert hub.log()[-1][0] == 304
    # hub stopped: installed models stay usable, cached answers serve with a warning
    async with _mm(models_dir, hub.url, manifest_ttl_s=0.0) as mm:
        warnings: list[WarningEvent] = []
        mm.subscribe(lambda ev: warnings.append(ev) if isinstance(ev, WarningEvent) else None)
        assert mm.get_model_path("m") == models_dir / "m" / "1"
        assert await mm.ainstall("m") == models_dir / "m" / "1"
        assert warnings and "unreachable" in warnings[0].message
        with pytest.raises(HubError):
            await mm.ainstall("never-seen")


async def test_offline_version_none_is_the_newest_ready_installed(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1.9", {"a.bin": 10_000})
    publish(store, "m", "1.10", {"a.bin": 10_000}, default=False)
    with running_stub(store) as hub:
        async with _mm(models_dir, hub) as mm:
            await mm.ainstall("m", "1.9")
            await mm.ainstall("m", "1.10")
    (models_dir / ".accel" / "manifest_cache.json").unlink()
    async with _mm(models_dir, hub.url) as mm:
        assert await mm.resolve_version("m", None) == "1.10"
        assert mm.get_model_path("m") == models_dir / "m" / "1.10"


async def test_identical_files_of_a_new_version_are_hard_linked(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    same = os.urandom(500_000)
    publish(store, "m", "1", {"shared.bin": same, "old.bin": 100_000})
    publish(store, "m", "2", {"shared.bin": same, "new.bin": 120_000})
    async with _mm(models_dir, hub) as mm:
        p1 = await mm.ainstall("m", "1")
        before = hub.storage_bytes()
        ready: list[ReadyEvent] = []
        mm.subscribe(lambda ev: ready.append(ev) if isinstance(ev, ReadyEvent) else None)
        p2 = await mm.ainstall("m", "2")
        assert hub.storage_bytes() - before == 120_000  # only the new file
        assert os.stat(p1 / "shared.bin").st_ino == os.stat(p2 / "shared.bin").st_ino
        assert ready[0].bytes_reused == 500_000
        # removing the old version leaves the new one whole
        assert await mm.aremove("m", "1") == ["m@1"]
        assert (p2 / "shared.bin").read_bytes() == same
        assert not p1.exists()


async def test_update_installs_only_what_changed(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "a", "1", {"x.bin": 200_000, "y.bin": 50_000})
    publish(store, "b", "1", {"z.bin": 30_000})
    async with _mm(models_dir, hub, manifest_ttl_s=0) as mm:
        await mm.ainstall("a")
        await mm.ainstall("b")
        assert await mm.aupdate() == []  # nothing changed: no file fetched
        before = hub.storage_bytes()
        # a: new default version sharing y.bin; b: its pinned version re-published
        y = (store / "models" / "a" / "1" / "files" / "y.bin").read_bytes()
        publish(store, "a", "2", {"x.bin": 210_000, "y.bin": y})
        republish_file(store, "b", "1", "z.bin", b"new z" * 1000)
        ready: list[ReadyEvent] = []
        mm.subscribe(lambda ev: ready.append(ev) if isinstance(ev, ReadyEvent) else None)
        assert sorted(await mm.aupdate()) == ["a@2", "b@1"]
        assert hub.storage_bytes() - before == 210_000 + 5000
        assert {(r.model_id, r.version) for r in ready} == {("a", "2"), ("b", "1")}
        assert mm.get_model_path("a", "1").is_dir()  # old version still usable
        assert (mm.get_model_path("b", "1") / "z.bin").read_bytes() == b"new z" * 1000


async def test_pause_keeps_bytes_and_resume_finishes(store: Path, models_dir: Path) -> None:
    publish(store, "big", "1", {"a.bin": 40_000_000})
    with running_stub(store) as hub:
        async with _mm(models_dir, hub, limit_rate="8M") as mm:
            await mm.ainstall("big", "1", wait=False)
            await until(
                lambda: mm.status("big", "1") and mm.status("big", "1")[0].bytes_done >= 20_000_000,
                what="20 MB of big@1",
            )
            await mm.apause("big", "1")
            rec = mm.status("big", "1")[0]
            assert rec.state == "paused"
            # paused, bytes_done is what is kept: the finished chunks and what the
            # running ones had written (their slots of accel/fetch/written.py), not all
            kept = rec.bytes_done
            assert 4_000_000 <= kept < 40_000_000, kept
            with pytest.raises(ModelNotAvailableError) as e:
                mm.get_model_path("big", "1")
            assert e.value.reason == "paused"
            assert (models_dir / "big" / "1" / "a.bin.part").exists()
        sent_before = hub.storage_bytes()
        async with _mm(models_dir, hub) as mm:
            await mm.aresume("big", "1")
            await mm.wait_idle()
            assert mm.get_model_path("big", "1").is_dir()
        resumed = hub.storage_bytes() - sent_before
        # The kept bytes were not fetched again. The stub counts each answer's
        # Content-Length, so a chunk split near the end counts twice: leave 4 MB for it.
        assert resumed < 40_000_000 - kept + 4_000_000


async def test_priority_queue_starts_the_highest_priority_first(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    for name in ("a", "b", "c", "d"):
        publish(store, name, "1", {"f.bin": 1_000_000 if name == "a" else 100_000})
    # a holds the only slot for ~0.5 s (2 MB/s): b, c and d are all queued before it ends
    async with _mm(models_dir, hub, max_parallel_installs=1, limit_rate="2M") as mm:
        order: list[str] = []
        a_has_the_slot = asyncio.Event()

        def on_event(ev: object) -> None:
            if isinstance(ev, ReadyEvent):
                order.append(ev.model_id)
            elif isinstance(ev, StateEvent) and (ev.model_id, ev.state) == ("a", "downloading"):
                a_has_the_slot.set()  # published once the slot is taken

        mm.subscribe(on_event)
        await mm.ainstall("a", "1", wait=False)
        # Waited for, not assumed: a's job fetches its manifest and waits for the worker
        # processes first, so one loop turn is not enough (on a cold machine b could win).
        await asyncio.wait_for(a_has_the_slot.wait(), 30)
        await mm.ainstall("b", "1", wait=False, priority=0)
        await mm.ainstall("c", "1", wait=False, priority=5)
        await mm.ainstall("d", "1", wait=False, priority=1)
        deadline = asyncio.get_running_loop().time() + 30
        while len(mm.queued()) < 3 and not order:
            assert asyncio.get_running_loop().time() < deadline, mm.queued()
            await asyncio.sleep(0.01)
        assert not order, "a finished before b, c and d were queued behind it"
        assert mm.queued() == ["c@1", "d@1", "b@1"]
        await mm.wait_idle()
    assert order[0] == "a" and order[1:] == ["c", "d", "b"]


async def test_verify_finds_damage_and_retry_repairs_only_it(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 300_000, "b.bin": 200_000})
    async with _mm(models_dir, hub) as mm:
        path = await mm.ainstall("m", "1")
        assert await mm.averify() == {"m@1": []}
        with open(path / "b.bin", "r+b") as f:
            f.seek(1000)
            f.write(b"rot")
        assert await mm.averify("m") == {"m@1": ["b.bin"]}
        with pytest.raises(ModelNotAvailableError):
            mm.get_model_path("m", "1")
        before = hub.storage_bytes()
        await mm.aretry("m", "1")
        await mm.wait_idle()
        assert hub.storage_bytes() - before == 200_000
        assert await mm.averify() == {"m@1": []}


async def test_remove_emits_event_and_forgets(store: Path, hub: StubHub, models_dir: Path) -> None:
    publish(store, "m", "1", {"a.bin": 1000})
    async with _mm(models_dir, hub) as mm:
        await mm.ainstall("m")
        sub = mm.subscribe()
        await mm.aremove("m")
        ev = await asyncio.wait_for(sub.__aiter__().__anext__(), 5)
        assert isinstance(ev, RemovedEvent) and ev.model_id == "m"
        with pytest.raises(ModelNotAvailableError) as e:
            mm.get_model_path("m", "1")
        assert e.value.reason == "not_installed"
        assert not (models_dir / "m").exists()


async def test_export_logs_has_logs_registry_and_lock_records(
    store: Path, hub: StubHub, models_dir: Path, tmp_path: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 1000})
    async with _mm(models_dir, hub) as mm:
        await mm.ainstall("m")
        held = mm.locks.try_acquire(
            "tasks/x@1", kind="task", model_id="x", version="1", timeout_s=60
        )
        out = mm.export_logs(tmp_path / "report.tar.gz")
        held.release()
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert "accel-report/registry.json" in names
        assert "accel-report/locks/tasks/x@1.json" in names
        log = tar.extractfile("accel-report/logs/accel.log")
        assert log is not None
        lines = [json.loads(line) for line in log.read().decode().splitlines()]
    assert any(line["message"].startswith("ready m@1") for line in lines)


def test_sync_wrappers(store: Path, hub: StubHub, models_dir: Path) -> None:
    publish(store, "m", "1", {"a.bin": 50_000})
    mm = _mm(models_dir, hub)
    try:
        assert mm.install("m") == models_dir / "m" / "1"
        assert mm.verify() == {"m@1": []}
        assert mm.remove("m") == ["m@1"]
    finally:
        mm.close()


async def test_task_and_file_lock_records_heartbeat_during_an_install(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "slow", "1", {"a.bin": 12_000_000})
    async with _mm(models_dir, hub, limit_rate="6M", heartbeat_s=0.1) as mm:
        await mm.ainstall("slow", "1", wait=False)
        task_rec = models_dir / ".accel" / "locks" / "tasks" / "slow@1.json"
        await until(task_rec.exists, what="the task's lock record")
        first = json.loads(task_rec.read_text())
        deadline = asyncio.get_running_loop().time() + 10
        later = first
        while later["heartbeat_at"] <= first["heartbeat_at"]:  # the next heartbeat, waited for
            assert asyncio.get_running_loop().time() < deadline, "no heartbeat in 10 s"
            await asyncio.sleep(0.02)
            later = json.loads(task_rec.read_text())
        assert later["pid"] == os.getpid() and later["model_id"] == "slow"
        files = await until(
            lambda: [r for r in mm.lock_records() if r.get("kind") == "file"],
            what="a file lock record",
        )
        assert files and files[0]["file"] == "a.bin" and files[0]["status"] == "alive"
        await mm.wait_idle()
        assert not task_rec.exists()  # released with the lock


async def test_duplicate_content_inside_a_version_is_fetched_once(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    same = os.urandom(700_000)
    publish(store, "m", "1", {"a.bin": same, "copy/b.bin": same, "c.bin": 1000})
    async with _mm(models_dir, hub) as mm:
        path = await mm.ainstall("m", "1")
    assert hub.storage_bytes() == 700_000 + 1000
    assert (path / "copy" / "b.bin").read_bytes() == same
    assert os.stat(path / "a.bin").st_ino == os.stat(path / "copy" / "b.bin").st_ino


async def test_priority_of_a_running_install_sticks(store: Path, models_dir: Path) -> None:
    """A priority given while the install downloads is what status shows, survives the
    install's own registry writes, and is what a pause keeps for the resume."""
    publish(store, "run", "1", {"a.bin": 16_000_000, "b.bin": 3_000_000})
    with running_stub(store) as hub:
        async with _mm(models_dir, hub, limit_rate="2M") as mm:
            await mm.ainstall("run", "1", wait=False, priority=1)
            await until(
                lambda: mm.status("run", "1") and mm.status("run", "1")[0].bytes_done > 0,
                what="the first bytes of run@1",
            )
            await mm.aset_priority("run", "1", 7)
            assert mm.status("run", "1")[0].priority == 7

            # No wait for a "periodic flush": the install writes its record when a file
            # completes (batched) and when it stops, not on a clock (a 2.5 s sleep here
            # ended before any such write). The pause below is the install's own write.
            rec = mm.status("run", "1")[0]
            assert rec.state == "downloading" and rec.priority == 7
            await mm.apause("run", "1")
            assert mm.status("run", "1")[0].priority == 7
