"""Staged updates of a pinned version whose content changed on the hub (seed 2.1.3).

The ready version must stay usable at its path, with its old content, until the new
content is fetched (only the files whose sha256 changed), verified and swapped in; a
pause, a failure or a SIGKILL at any point leaves the old version ready and the update
resumable. Real hub stub on loopback, real worker processes, real kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accel.errors import AccelError, CheckpointError
from accel.fetch.checkpoint import load_checkpoint
from accel.manager import ModelManager
from accel.manager.events import FailedEvent, ProgressEvent, ReadyEvent, StateEvent
from accel.schema import Registry
from tests.manager.hubstub import StubHub, publish, republish_file, running_stub
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]


def _mm(models_dir: Path, hub: StubHub, **kw: object) -> ModelManager:
    kw.setdefault("workers", 2)
    kw.setdefault("retry_backoff_s", 0.05)
    kw.setdefault("manifest_ttl_s", 0)
    return ModelManager(models_dir, hub.url, **kw)  # type: ignore[arg-type]


async def _install(models_dir: Path, hub: StubHub, model: str = "m", version: str = "1") -> Path:
    """Install a version with a throwaway manager; returns its ready path."""
    async with _mm(models_dir, hub) as mm:
        path = await mm.ainstall(model, version)
    assert path is not None
    return path


def _hub_checksum(store: Path, model: str = "m", version: str = "1") -> str:
    """The version's checksum as the hub publishes it now."""
    manifest = json.loads((store / "models" / model / version / "manifest.json").read_text())
    return str(manifest["checksum_sha256"])


def _registry(models_dir: Path) -> Registry:
    return Registry.model_validate_json((models_dir / "registry.json").read_bytes())


def _leftovers(models_dir: Path) -> list[Path]:
    state = models_dir / ".accel"
    return [p for d in ("staging", "trash") for p in (state / d).glob("*")]


def _assert_update_gone(models_dir: Path) -> None:
    """No staged update left: none in the registry, nothing in staging or the trash."""
    assert _registry(models_dir).updates == {}
    assert _leftovers(models_dir) == []


async def test_old_version_stays_usable_until_the_new_content_is_swapped_in(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1", {"big.bin": 6_000_000, "same.bin": 400_000, "cfg.json": b"{}"})
    with running_stub(store) as hub:
        path = await _install(models_dir, hub)
        old_big = (path / "big.bin").read_bytes()
        same_ino = (path / "same.bin").stat().st_ino
        old_fd = os.open(path / "big.bin", os.O_RDONLY)  # an inference service's open file
        new_big = os.urandom(6_000_000)
        republish_file(store, "m", "1", "big.bin", new_big)
        new_checksum = _hub_checksum(store)
        before = hub.storage_bytes()
        events: list[object] = []
        seen: list[tuple[str, str, bool]] = []
        # 2 MB/s: the 6 MB file takes ~3 s, long enough to look at the version mid-way
        async with _mm(models_dir, hub, limit_rate="2M") as mm:
            mm.subscribe(events.append)

            async def watch() -> None:
                # While the update runs, the version is ready at the same path with the
                # old bytes, and status shows the update beside it. The bytes are read
                # first: a status still "downloading" after the read proves the read came
                # before the swap (which follows "verifying", in a thread of its own).
                while not any(isinstance(e, ReadyEvent) for e in events):
                    old = (mm.get_model_path("m", "1") / "big.bin").read_bytes() == old_big
                    rec = mm.status("m", "1")[0]
                    if rec.update is not None:
                        seen.append((rec.state, rec.update.state, old))
                    await asyncio.sleep(0.02)

            watcher = asyncio.ensure_future(watch())
            assert await mm.aupdate() == ["m@1"]
            await asyncio.wait_for(watcher, 5)
        assert seen, "the watcher never saw the update running"
        assert {s for s, _, _ in seen} == {"ready"}
        assert "downloading" in {u for _, u, _ in seen}
        assert all(old for _, u, old in seen if u == "downloading")
        # only the changed file crossed the wire
        assert hub.storage_bytes() - before == len(new_big)
        assert mm.get_model_path("m", "1") == path
        assert (path / "big.bin").read_bytes() == new_big
        assert (path / "same.bin").stat().st_ino == same_ino  # linked, not fetched or copied
        assert os.pread(old_fd, 64, 0) == old_big[:64]  # the old open file still reads
        os.close(old_fd)
        reg = _registry(models_dir)
        assert reg.updates == {}
        rec = reg.installs["m@1"]
        assert rec.state == "ready" and rec.checksum_sha256 == new_checksum
        assert {f.path: f.state for f in rec.files} == dict.fromkeys(
            ("big.bin", "cfg.json", "same.bin"), "done"
        )
        assert _leftovers(models_dir) == []
        assert not list(path.rglob("*.part*"))
    ready = [e for e in events if isinstance(e, ReadyEvent)]
    assert len(ready) == 1 and ready[0].update and ready[0].path == str(path)
    # every state event of the update says so: a subscriber never reads "m@1 is downloading"
    states = [e for e in events if isinstance(e, StateEvent)]
    assert states and all(e.update for e in states)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert progress and all(e.update for e in progress)


async def test_a_failed_update_leaves_the_old_version_ready_and_retry_finishes_it(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 300_000, "b.bin": 200_000})
    with running_stub(store) as hub:
        path = await _install(models_dir, hub)
        async with _mm(models_dir, hub) as mm:
            old_a = (path / "a.bin").read_bytes()
            new_a = os.urandom(300_000)
            republish_file(store, "m", "1", "a.bin", new_a)
            served = store / "models" / "m" / "1" / "files" / "a.bin"
            served.write_bytes(os.urandom(300_000))  # the hub now serves bytes that lie
            failed: list[FailedEvent] = []
            mm.subscribe(lambda e: failed.append(e) if isinstance(e, FailedEvent) else None)
            with pytest.raises(AccelError):
                await mm.aupdate()
            assert failed and failed[0].update
            assert mm.get_model_path("m", "1") == path
            assert (path / "a.bin").read_bytes() == old_a
            rec = mm.status("m", "1")[0]
            assert rec.state == "ready" and rec.update is not None
            assert rec.update.state == "error" and rec.update.error is not None
            # the hub is fixed; retry fetches the changed file and swaps it in
            served.write_bytes(new_a)
            await mm.aretry("m", "1")
            await mm.wait_idle()
            assert (mm.get_model_path("m", "1") / "a.bin").read_bytes() == new_a
            assert mm.status("m", "1")[0].update is None
            _assert_update_gone(models_dir)


async def test_pause_and_resume_of_an_update_keep_the_ready_version(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1", {"w.bin": 1_000_000})
    with running_stub(store) as hub:
        path = await _install(models_dir, hub)
        old = (path / "w.bin").read_bytes()
        new = os.urandom(16_000_000)
        republish_file(store, "m", "1", "w.bin", new)
        async with _mm(models_dir, hub, limit_rate="4M") as mm:
            await mm.aupdate_version("m", "1", wait=False)
            deadline = time.monotonic() + 10
            while True:
                rec = mm.status("m", "1")[0]
                if rec.update is not None and rec.update.bytes_done >= 4_000_000:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await mm.apause("m", "1")
            rec = mm.status("m", "1")[0]
            assert rec.state == "ready" and rec.update is not None
            assert rec.update.state == "paused"
            assert (mm.get_model_path("m", "1") / "w.bin").read_bytes() == old
        sent = hub.storage_bytes()
        async with _mm(models_dir, hub) as mm:
            await mm.aresume("m", "1")
            await mm.wait_idle()
            assert (mm.get_model_path("m", "1") / "w.bin").read_bytes() == new
        # the bytes fetched before the pause were kept (4 MB of slack for a split chunk)
        assert hub.storage_bytes() - sent < len(new) - 4_000_000 + 4_000_000 // 2
        assert _leftovers(models_dir) == []


def _update_process(models_dir: Path, hub: StubHub, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.manager.updater", str(models_dir), hub.url, *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_sigkill_during_an_update_keeps_the_old_version_and_a_rerun_resumes(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1", {"w.bin": 1_000_000, "k.bin": 100_000})
    with running_stub(store) as hub:
        path = await _install(models_dir, hub)
        old = (path / "w.bin").read_bytes()
        new = os.urandom(40_000_000)
        republish_file(store, "m", "1", "w.bin", new)
        staged = models_dir / ".accel" / "staging" / "m@1" / "w.bin"

        def held() -> int:
            with contextlib.suppress(OSError, CheckpointError):
                cp = load_checkpoint(staged)
                return sum(c.end - c.start for c in cp.chunks) if cp is not None else 0
            return 0

        for _ in range(3):  # three kills at different depths of the download
            before = held()
            proc = _update_process(models_dir, hub, "--limit-rate=6M")
            # kill once this run has checkpointed 2 MB of its own
            deadline = time.monotonic() + 30
            while held() < before + 2_000_000:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # after each kill: the registry parses, the old version is ready and whole
            reg = _registry(models_dir)
            assert reg.installs["m@1"].state == "ready"
            async with _mm(models_dir, hub) as mm:
                assert (mm.get_model_path("m", "1") / "w.bin").read_bytes() == old
                rec = mm.status("m", "1")[0]
                assert rec.update is not None and rec.update.state == "paused"
        kept = held()
        assert kept >= 6_000_000
        sent = hub.storage_bytes()
        proc = _update_process(models_dir, hub)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out) == {"updated": ["m@1"]}
        # the rerun fetched only what the killed runs had not finished. The stub counts
        # each answer's Content-Length, so a tail chunk split or raced near the end
        # counts twice: 8 MB of slack, and still less than the whole file.
        resent = hub.storage_bytes() - sent
        assert resent <= len(new) - kept + 8_000_000 and resent < len(new)
        async with _mm(models_dir, hub) as mm:
            assert (mm.get_model_path("m", "1") / "w.bin").read_bytes() == new
        _assert_update_gone(models_dir)


@pytest.mark.parametrize("exchange", ["renameat2", "two-renames", "between-renames"])
async def test_a_crash_between_the_swap_and_the_record_is_finished_at_start_up(
    store: Path, models_dir: Path, exchange: str
) -> None:
    publish(store, "m", "1", {"w.bin": 500_000, "k.bin": 10_000})
    with running_stub(store) as hub:
        path = await _install(models_dir, hub)
        new = os.urandom(500_000)
        republish_file(store, "m", "1", "w.bin", new)
        # The updater dies (os._exit, as a SIGKILL would) right after the directories
        # were swapped, before the registry learnt of it.
        proc = _update_process(models_dir, hub, "--die-after-swap", f"--exchange={exchange}")
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 9, err.decode()
        reg = _registry(models_dir)
        assert reg.updates["m@1"].swap_ino is not None  # the intent was recorded
        if exchange != "between-renames":
            assert (path / "w.bin").read_bytes() == new  # the swap happened
        else:
            assert not path.exists()  # the old one was moved aside, the new one not yet in
        sent = hub.storage_bytes()
        async with _mm(models_dir, hub) as mm:  # start-up finishes the swap
            rec = mm.status("m", "1")[0]
            assert rec.state == "ready" and rec.update is None
            assert rec.checksum_sha256 == _hub_checksum(store)
            assert (mm.get_model_path("m", "1") / "w.bin").read_bytes() == new
            assert await mm.aupdate() == []  # nothing left to do
        assert hub.storage_bytes() == sent
        assert _leftovers(models_dir) == []


async def test_remove_during_a_stopped_update_removes_its_staging_too(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1", {"w.bin": 100_000})
    with running_stub(store) as hub:
        await _install(models_dir, hub)
        republish_file(store, "m", "1", "w.bin", os.urandom(8_000_000))
        async with _mm(models_dir, hub, limit_rate="2M") as mm:
            await mm.aupdate_version("m", "1", wait=False)
            await until(
                lambda: list((models_dir / ".accel" / "staging").glob("*/w.bin.part")),
                what="the staged w.bin.part",
            )
            assert await mm.aremove("m", "1") == ["m@1"]
        assert _registry(models_dir).installs == {} and _registry(models_dir).updates == {}
        assert _leftovers(models_dir) == []
        assert not (models_dir / "m").exists()


async def test_two_processes_updating_at_once_fetch_the_change_once(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1", {"w.bin": 200_000, "k.bin": 50_000})
    with running_stub(store) as hub:
        await _install(models_dir, hub)
        new = os.urandom(8_000_000)
        republish_file(store, "m", "1", "w.bin", new)
        sent = hub.storage_bytes()
        procs = [_update_process(models_dir, hub, "--limit-rate=8M") for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [e.decode() for _, e in outs]
        # both end with m@1 up to date; the origin sent the changed file once
        assert all(json.loads(o) == {"updated": ["m@1"]} for o, _ in outs)
        assert hub.storage_bytes() - sent <= len(new) * 1.05
        async with _mm(models_dir, hub) as mm:
            assert (mm.get_model_path("m", "1") / "w.bin").read_bytes() == new
        _assert_update_gone(models_dir)


def test_files_of_a_version_mid_swap_are_not_reused(tmp_path: Path) -> None:
    from accel.manager.install import find_reusable
    from accel.schema import FileStatus, InstallRecord

    vdir = tmp_path / "m" / "1"
    vdir.mkdir(parents=True)
    (vdir / "w.bin").write_bytes(b"x" * 10)
    files = [FileStatus(path="w.bin", bytes_total=10, sha256="aa", state="done", bytes_done=10)]
    rec = InstallRecord(
        model_id="m", version="1", state="ready", path=str(vdir), bytes_total=10, files=files
    )
    reg = Registry(installs={"m@1": rec})
    assert find_reusable(reg, tmp_path, "aa", 10) == vdir / "w.bin"
    staged = rec.model_copy(update={"state": "verifying", "checksum_sha256": "new"})
    reg.updates["m@1"] = staged
    assert find_reusable(reg, tmp_path, "aa", 10) == vdir / "w.bin"  # staged, not swapping
    staged.swap_ino = 12345  # the swap may have happened: w.bin may hold other bytes
    assert find_reusable(reg, tmp_path, "aa", 10) is None
