"""Files fetched without a per-file fsync: never recorded ``done`` before a ``syncfs``,
and a file renamed but never synced (what a power cut can leave) is re-checked."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import accel.manager.install as install_mod
import accel.manager.registry as registry_mod
from accel.manager import ModelManager
from accel.schema import Registry
from tests.manager.hubstub import StubHub, publish


def _mm(models_dir: Path, hub: StubHub, **kw: object) -> ModelManager:
    return ModelManager(models_dir, hub.url, workers=2, retry_backoff_s=0.05, **kw)  # type: ignore[arg-type]


async def test_no_file_is_recorded_done_before_one_sync_made_it_durable(
    store: Path, hub: StubHub, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec: dict[str, int | bytes] = {f"s/f{i:02d}.bin": 40_000 + i for i in range(30)}
    publish(store, "m", "1", spec)
    synced: set[str] = set()
    syncs: list[int] = []
    early: list[str] = []
    real_sync, real_write = install_mod.sync_filesystem, registry_mod.atomic_write_bytes

    def counting_sync(path: Path) -> None:
        # What a power cut after this call can no longer lose: every file renamed so far.
        names = {str(p.relative_to(path)) for p in path.rglob("*.bin")}
        time.sleep(0.15)  # a slow disk: files keep finishing while the sync runs
        real_sync(path)
        synced.update(names)
        syncs.append(len(names))

    def checked_write(path: Path, data: bytes, **kw: bool) -> None:
        if path.name == "registry.json":
            for rec in Registry.model_validate_json(data).installs.values():
                for f in rec.files:
                    if f.state == "done" and f.path not in synced:
                        early.append(f.path)  # (an assert here would die in a flush task)
        real_write(path, data, **kw)

    monkeypatch.setattr(install_mod, "sync_filesystem", counting_sync)
    monkeypatch.setattr(registry_mod, "atomic_write_bytes", checked_write)
    monkeypatch.setattr(install_mod, "_FLUSH_EVERY_S", 0.1)  # flushes while files finish
    async with _mm(models_dir, hub, limit_rate="1M") as mm:
        path = await mm.ainstall("m", "1")
    assert path is not None and len(synced) == 30
    assert early == [], "recorded done before a sync"
    assert 3 <= len(syncs) <= 20  # one per registry flush window, not one per file
    rec = Registry.model_validate_json((models_dir / "registry.json").read_bytes())
    assert all(f.state == "done" for f in rec.installs["m@1"].files)


async def test_a_renamed_but_unsynced_file_that_lost_its_bytes_is_fetched_again(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 300_000, "b.bin": 200_000})
    async with _mm(models_dir, hub) as mm:
        path = await mm.ainstall("m", "1")
    assert path is not None
    good = (path / "a.bin").read_bytes()
    # What a power cut between the rename and the sync can leave: the final name with
    # the right size but zeros, and the registry still saying "downloading".
    (path / "a.bin").write_bytes(b"\0" * len(good))
    reg_path = models_dir / "registry.json"
    reg = Registry.model_validate_json(reg_path.read_bytes())
    rec = reg.installs["m@1"]
    rec.state, rec.owner_pid, rec.owner_start = "downloading", 2**22 + 7, 1.0
    next(f for f in rec.files if f.path == "a.bin").state = "downloading"
    reg_path.write_text(reg.model_dump_json())
    before = hub.storage_bytes()
    async with _mm(models_dir, hub) as mm:
        await mm.ainstall("m", "1")
        assert await mm.averify() == {"m@1": []}
    assert (path / "a.bin").read_bytes() == good
    assert hub.storage_bytes() - before == 300_000  # only the file that lost its bytes
