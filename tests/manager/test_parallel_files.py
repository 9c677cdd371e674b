"""How many files of one version are in flight: ``max_parallel_files`` large ones, and
four times as many small ones (each one request on one connection), so a version of
hundreds of small files keeps a per-connection-capped origin busy (issue 16: 500 small
files took 0.72x huggingface_hub's wall with 3 at a time, 0.46x with 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from accel.manager import ModelManager
from accel.manager.install import SMALL_FILE_BYTES, SMALL_FILES_PER_SLOT, VersionInstall
from tests.manager.hubstub import StubHub, publish


def _count_in_flight(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most files the install had between _begin and _end at once (a real install)."""
    most = [0]
    live: set[str] = set()
    begin, end = VersionInstall._begin, VersionInstall._end

    def counting_begin(self: VersionInstall, path: str) -> None:
        live.add(path)
        most[0] = max(most[0], len(live))
        begin(self, path)

    def counting_end(self: VersionInstall, path: str) -> None:
        live.discard(path)
        end(self, path)

    monkeypatch.setattr(VersionInstall, "_begin", counting_begin)
    monkeypatch.setattr(VersionInstall, "_end", counting_end)
    return most


async def test_small_files_run_several_per_slot(
    store: Path, hub: StubHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(store, "many", "1", {f"f{i:02d}.bin": 200_000 for i in range(24)})
    most = _count_in_flight(monkeypatch)
    # 4.8 MB at 2 MB/s: each file lasts long enough for the others to start beside it
    async with ModelManager(
        tmp_path / "models", hub.url, workers=1, max_parallel_files=1, limit_rate="2M"
    ) as mm:
        await mm.ainstall("many", "1")
        assert mm.get_model_path("many", "1").is_dir()
    assert 1 < most[0] <= SMALL_FILES_PER_SLOT, most[0]


async def test_large_files_keep_to_max_parallel_files(
    store: Path, hub: StubHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = SMALL_FILE_BYTES + 1
    publish(store, "big", "1", {f"f{i}.bin": big for i in range(3)})
    most = _count_in_flight(monkeypatch)
    async with ModelManager(
        tmp_path / "models", hub.url, workers=1, max_parallel_files=1, limit_rate="8M"
    ) as mm:
        await mm.ainstall("big", "1")
    assert most[0] == 1
