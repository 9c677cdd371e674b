"""The manifest each version was installed from, kept in ``.accel/manifests`` (what a
node's peer server serves blocks by): written before the first byte of an install,
replaced when a staged update swaps in (never while the old content is still the
ready one), dropped with the version. Real hub stub on loopback, real workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from accel.manager import ModelManager
from accel.manager.manifests import ManifestStore
from tests.manager.hubstub import StubHub, publish, republish_file, running_stub


def _hub_manifest(store: Path, model: str, version: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (store / "models" / model / version / "manifest.json").read_text()
    )
    return data


def _mm(models_dir: Path, hub: StubHub) -> ModelManager:
    return ModelManager(models_dir, hub.url, workers=1, manifest_ttl_s=0)


async def test_kept_on_install_replaced_by_an_update_dropped_on_remove(
    store: Path, models_dir: Path
) -> None:
    publish(store, "m", "1", {"big.bin": 3_000_000, "cfg.json": b"{}"})
    kept = ManifestStore(models_dir / ".accel")
    with running_stub(store) as hub:
        async with _mm(models_dir, hub) as mm:
            await mm.ainstall("m", "1")
            first = kept.load("m", "1")
            assert first is not None
            hub_first = _hub_manifest(store, "m", "1")
            assert first.checksum_sha256 == hub_first["checksum_sha256"]
            big = next(f for f in first.files if f.path == "big.bin")
            assert big.chunks is not None and len(big.chunks.digests) >= 1
            assert mm.status("m", "1")[0].checksum_sha256 == first.checksum_sha256

            republish_file(store, "m", "1", "big.bin", os.urandom(2_000_000))
            await mm.aupdate_version("m", "1")
            second = kept.load("m", "1")
            assert second is not None
            assert second.checksum_sha256 == _hub_manifest(store, "m", "1")["checksum_sha256"]
            assert second.checksum_sha256 != first.checksum_sha256
            assert mm.status("m", "1")[0].checksum_sha256 == second.checksum_sha256

            assert await mm.aremove("m", "1") == ["m@1"]
            assert kept.load("m", "1") is None
            assert not kept.path("m", "1").exists()
