"""What a small file costs the engine beyond its request (issue 15: 10,000 files).

A version of many small files is one whole-file request each; the syscalls around it
(a folder's mkdir, a statvfs) were paid per file. These tests pin what replaced them
and that the shortcuts keep the behaviour: a folder removed since is made again, and
the free space the checked downloads claim is counted against the next ones.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from accel.errors import InsufficientDiskSpaceError
from accel.fetch import Engine, Expected
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

MiB = 1 << 20


def _expected(www: Path, name: str) -> Expected:
    path = www / name
    return Expected(size=path.stat().st_size, sha256=sha256_of(path))


def _count_statvfs(monkeypatch: pytest.MonkeyPatch, free: int | None = None) -> list[str]:
    calls: list[str] = []
    real = shutil.disk_usage

    def disk_usage(path: Any) -> Any:
        calls.append(str(path))
        got = real(path)
        return got if free is None else got._replace(free=free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)  # (as the supervisor calls it)
    return calls


async def test_small_files_read_a_folders_free_space_once_a_second(
    origin: Nginx, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_statvfs(monkeypatch)
    async with Engine(workers=2, connections=4) as engine:
        for i in range(6):  # one after the other: well within a second on any machine
            name = f"many{i}.bin"
            r = await engine.download(
                origin.file_url(name), tmp_path / name, expected=_expected(www, name)
            )
            assert r.sha256 == sha256_of(www / name)
    # before: one statvfs per file (6)
    assert 1 <= len(calls) <= 2, calls


async def test_the_space_checked_downloads_claim_counts_against_the_next(
    origin: Nginx, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the free figure read once, each checked file takes its size off it: the
    fourth of four ~300 KB files does not fit in 16 MiB (the margin) + 3 x 300 KB."""
    sizes = [(www / f"many{i}.bin").stat().st_size for i in range(4)]
    _count_statvfs(monkeypatch, free=16 * MiB + sum(sizes[:3]) + 1000)
    async with Engine(workers=2, connections=4) as engine:
        for i in range(3):
            name = f"many{i}.bin"
            await engine.download(
                origin.file_url(name), tmp_path / name, expected=_expected(www, name)
            )
        with pytest.raises(InsufficientDiskSpaceError):
            await engine.download(
                origin.file_url("many3.bin"), tmp_path / "many3.bin",
                expected=_expected(www, "many3.bin"),
            )  # fmt: skip
    assert not (tmp_path / "many3.bin").exists()


async def test_a_folder_removed_between_downloads_is_made_again(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    async with Engine(workers=2, connections=4) as engine:
        for name in ("many0.bin", "many1.bin"):
            dest = tmp_path / "sub" / "deeper" / name
            r = await engine.download(origin.file_url(name), dest, expected=_expected(www, name))
            assert r.sha256 == sha256_of(dest)
            shutil.rmtree(tmp_path / "sub")  # the engine saw the folder: it is gone now
        # and a ranged (not whole-file) download into a removed folder too
        dest = tmp_path / "sub" / "big.bin"
        r = await engine.download(origin.file_url("big.bin"), dest, chunk_size=4 * MiB)
        assert r.sha256 == sha256_of(www / "big.bin")


async def test_many_small_files_at_once_each_verified(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    async with Engine(workers=2, connections=4) as engine:
        results = await asyncio.gather(*(
            engine.download(
                origin.file_url(f"many{i}.bin"), tmp_path / f"d{i % 2}" / f"m{i}.bin",
                expected=_expected(www, f"many{i}.bin"),
            )
            for i in range(6)
        ))  # fmt: skip
    for i, r in enumerate(results):
        assert r.verified and r.sha256 == sha256_of(www / f"many{i}.bin")
