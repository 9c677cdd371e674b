"""Disk full at the ModelManager level, on a real tmpfs used as the models dir.

- before start: the install is refused with InsufficientDiskSpaceError (needed vs free)
  before any file body is fetched; nothing is ready; after the tmpfs grows, it completes.
- mid-download: the tmpfs is filled by another writer while the install runs; the
  install fails with InsufficientDiskSpaceError, the registry stays valid and nothing is
  ready; once the filler is deleted, a retry completes to ready and verified.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from accel.errors import InsufficientDiskSpaceError, ModelNotAvailableError
from accel.manager.install import SMALL_FILE_BYTES
from accel.manager.manager import ModelManager
from accel.schema import Registry
from tests.reliability.store import publish_catalog
from tests.reliability.tmpfs import fill, require_root, resize, tmpfs
from tests.support.faultproxy import FaultProxy
from tests.support.hub import running_hub

pytestmark = pytest.mark.root
MiB = 1024 * 1024
MODEL, VERSION = "disk-model", "1.0"


def publish(tmp_path: Path, n: int, size: int) -> dict[str, bytes]:
    spec = {f"shard-{i}.bin": size for i in range(n)}
    return publish_catalog(tmp_path / "store", {(MODEL, VERSION): spec})[(MODEL, VERSION)]


def registry_of(models: Path) -> Registry:
    return Registry.model_validate(json.loads((models / "registry.json").read_bytes()))


async def test_disk_full_before_start(tmp_path: Path) -> None:
    require_root()
    version = publish(tmp_path, 3, 4 * MiB)
    with tmpfs(tmp_path / "mnt", "8m") as models:
        with running_hub(tmp_path / "store") as hub, FaultProxy(hub.url) as proxy:
            async with ModelManager(models, proxy.url, workers=1) as mm:
                with pytest.raises(InsufficientDiskSpaceError) as info:
                    await mm.ainstall(MODEL, VERSION)
                assert info.value.facts["needed"] > info.value.facts["free"]
                with pytest.raises(ModelNotAvailableError):
                    mm.get_model_path(MODEL, VERSION)
                storage = [r for r in proxy.snapshot().records if "/storage/" in r.target]
                assert storage == [], "file bodies were fetched although the disk was full"
                resize(models, "64m")
                await mm.aretry(MODEL, VERSION)
                await mm.wait_idle()
                path = mm.get_model_path(MODEL, VERSION)
        for rel, data in version.items():
            assert (path / rel).read_bytes() == data


async def test_disk_fills_up_mid_install_then_resumes(tmp_path: Path) -> None:
    require_root()
    # Files larger than the small-file size (each is then one of max_parallel_files=2 at
    # once; 3 MiB files ran 8 at once, all their space taken before the filler came)
    version = publish(tmp_path, 6, SMALL_FILE_BYTES + MiB)
    # 2 MB/s per response: the install is still running when the disk fills up.
    with (
        tmpfs(tmp_path / "mnt", "48m") as models,
        running_hub(tmp_path / "store") as hub,
        FaultProxy(hub.url, trickle_bps=2_000_000) as proxy,
    ):
        async with ModelManager(
            models, proxy.url, workers=1, max_parallel_files=2, retry_backoff_s=0.05
        ) as mm:
            task = asyncio.ensure_future(mm.ainstall(MODEL, VERSION))
            while proxy.client_body_bytes < 2 * MiB:
                await asyncio.sleep(0.05)
            assert not task.done()
            filler = fill(models)
            with pytest.raises(InsufficientDiskSpaceError):
                await asyncio.wait_for(task, 120)
            reg = registry_of(models)  # still parses after failed writes
            rec = reg.installs[f"{MODEL}@{VERSION}"]
            assert rec.state != "ready"
            with pytest.raises(ModelNotAvailableError):
                mm.get_model_path(MODEL, VERSION)
            first = proxy.client_body_bytes
            os.unlink(filler)
            await mm.aretry(MODEL, VERSION)
            await mm.wait_idle()
            path = mm.get_model_path(MODEL, VERSION)
            assert await mm.averify(MODEL, VERSION) == {f"{MODEL}@{VERSION}": []}
            total = proxy.client_body_bytes
        for rel, data in version.items():
            assert (path / rel).read_bytes() == data
        size = sum(len(b) for b in version.values())
        # The retry fetched what was missing, not everything again.
        assert total - first < size + 4 * MiB
