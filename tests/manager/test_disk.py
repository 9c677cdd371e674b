"""Disk full on a real, small tmpfs the test mounts: refused before the first byte when
the version cannot fit; ENOSPC mid-way leaves a resumable error that a retry finishes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from accel.errors import InsufficientDiskSpaceError, ModelNotAvailableError
from accel.manager import ModelManager
from accel.manager.disk import margin_for, space_needed
from tests.manager.hubstub import StubHub, publish

pytestmark = pytest.mark.root


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (this suite runs as root in CI)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_space_policy() -> None:
    assert space_needed([100, 200], [100, 50]) == 150
    assert margin_for(0) == 0 and margin_for(100 << 20) == (1 << 20) + (1 << 20)


async def test_version_that_cannot_fit_is_refused_before_any_byte(
    store: Path, hub: StubHub, small_fs: Path
) -> None:
    publish(store, "big", "1", {"a.bin": 25_000_000, "b.bin": 25_000_000})
    async with ModelManager(small_fs / "models", hub.url, workers=1) as mm:
        with pytest.raises(InsufficientDiskSpaceError) as e:
            await mm.ainstall("big", "1")
        assert e.value.needed > 50_000_000 and e.value.free <= 40 * 2**20
        assert hub.storage_bytes() == 0  # refused before the first byte
        with pytest.raises(ModelNotAvailableError) as na:
            mm.get_model_path("big", "1")
        assert na.value.reason == "error" and na.value.error["code"] == "disk_full"


async def test_enospc_mid_install_is_resumable(store: Path, hub: StubHub, small_fs: Path) -> None:
    publish(store, "m", "1", {"a.bin": 8_000_000, "b.bin": 8_000_000})
    models = small_fs / "models"
    filler = small_fs / "filler"
    async with ModelManager(
        models, hub.url, workers=1, max_parallel_files=1, limit_rate="4M", file_retries=1
    ) as mm:
        task = asyncio.create_task(mm.ainstall("m", "1"))
        while not (models / "m" / "1" / "a.bin.part").exists():
            assert not task.done(), task
            await asyncio.sleep(0.01)
        # another tenant fills the disk while a.bin downloads: b.bin will not fit
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        with pytest.raises(InsufficientDiskSpaceError):
            await task
        rec = mm.status("m", "1")[0]
        assert rec.state == "error" and rec.error is not None and rec.error.code == "disk_full"
        assert not (models / "m" / "1" / "b.bin").exists()  # nothing half-written published
        with pytest.raises(ModelNotAvailableError):
            mm.get_model_path("m", "1")
        filler.unlink()
        before = hub.storage_bytes()
        await mm.aretry("m", "1")
        await mm.wait_idle()
        assert mm.get_model_path("m", "1") == models / "m" / "1"
        # At most the version once more: how much of the file that hit ENOSPC is kept
        # depends on whether the engine's checkpoint was written before the disk filled.
        assert hub.storage_bytes() - before <= 16_000_000
        assert (await mm.averify()) == {"m@1": []}


def test_registry_records_on_a_full_disk_with_its_reserve(small_fs: Path) -> None:
    from accel.manager.registry import RegistryStore
    from accel.schema import InstallRecord

    store = RegistryStore(small_fs / "models")
    store.update(lambda reg: None)  # the first write sets the reserve aside
    assert store.reserve_path.stat().st_size >= 64 * 1024
    filler = small_fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    assert os.statvfs(small_fs).f_bavail == 0  # without the reserve, no write fits

    def change(reg: object) -> None:
        reg.installs["m@1"] = InstallRecord(  # type: ignore[attr-defined]
            model_id="m", version="1", state="error", path="/x", bytes_total=1
        )

    store.update(change)
    assert store.read().installs["m@1"].state == "error"
    filler.unlink()
    store.update(lambda reg: None)
    assert store.reserve_path.stat().st_blocks * 512 >= 64 * 1024  # set aside again
