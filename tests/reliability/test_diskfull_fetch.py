"""Disk full at the accelerator level, on a real small tmpfs and by injected ENOSPC.

- before start: the engine refuses before fetching the body, with the needed and free
  byte counts, and succeeds once space is freed;
- mid-download: ``strace`` injects ENOSPC into the workers' ``pwrite64`` (the tmpfs cannot
  run out under a preallocated file); the engine fails with InsufficientDiskSpaceError,
  leaves no final file, and a rerun completes from the kept chunks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from accel.errors import InsufficientDiskSpaceError
from accel.fetch import Engine
from tests.reliability.chaos import BLOCK, expected_for
from tests.reliability.origin import NginxOrigin
from tests.reliability.tmpfs import require_root, resize, tmpfs
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.root
SIZE = 6 * 1024 * 1024


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(SIZE)
    (www / "big.bin").write_bytes(data)
    return www, data


async def test_disk_full_before_start_then_freed(
    tmp_path: Path, source: tuple[Path, bytes]
) -> None:
    require_root()
    www, data = source
    with (
        tmpfs(tmp_path / "mnt", "2m") as mnt,
        NginxOrigin(www) as origin,
        FaultProxy(origin.url) as proxy,
    ):
        dest = mnt / "big.bin"
        async with Engine(workers=1, connections=4) as engine:
            with pytest.raises(InsufficientDiskSpaceError) as info:
                await engine.download(
                    f"{proxy.url}/big.bin", dest, expected=expected_for(data), chunk_size=BLOCK
                )
            err = info.value
            assert err.code == "disk_full"
            assert err.facts.get("needed") and err.facts["needed"] >= SIZE
            assert err.facts.get("free") is not None and err.facts["free"] < SIZE
            assert not dest.exists()
            # At most the probe's first block left the origin: no body was fetched for nothing.
            assert proxy.client_body_bytes <= 2 * BLOCK
            resize(mnt, "32m")  # the engine keeps a 16 MiB margin
            result = await engine.download(
                f"{proxy.url}/big.bin", dest, expected=expected_for(data), chunk_size=BLOCK
            )
        assert result.size == SIZE and dest.read_bytes() == data
        assert [p.name for p in mnt.iterdir()] == ["big.bin"]  # no .part / checkpoint left


def _worker_pids() -> list[int]:
    me = psutil.Process()
    return [c.pid for c in me.children(recursive=True) if "python" in c.name().lower()]


async def test_enospc_mid_download_then_resume(tmp_path: Path, source: tuple[Path, bytes]) -> None:
    require_root()
    if shutil.which("strace") is None:
        pytest.skip("strace not installed: run ./scripts/setup")
    www, data = source
    dest = tmp_path / "out" / "big.bin"
    # Trickle so the download is still running when strace attaches to the workers.
    with (
        NginxOrigin(www) as origin,
        FaultProxy(origin.url, trickle_bps=3_000_000) as proxy,
    ):
        async with Engine(workers=2, connections=4, backoff_base=0.05) as engine:
            await engine.start()
            pids = _worker_pids()
            assert pids, "no worker processes found"
            args = ["strace", "-qq", "-f", "-e", "trace=pwrite64"]
            # Counted per thread (a worker reuses its threads across tasks): a third write fails.
            args += ["-e", "inject=pwrite64:error=ENOSPC:when=3+", "-o", "/dev/null"]
            for pid in pids:
                args += ["-p", str(pid)]
            tracer = subprocess.Popen(args, stderr=subprocess.PIPE)
            try:
                await asyncio.sleep(1.0)  # let strace attach
                with pytest.raises(InsufficientDiskSpaceError) as info:
                    await engine.download(
                        f"{proxy.url}/big.bin", dest, expected=expected_for(data), chunk_size=BLOCK
                    )
            finally:
                tracer.terminate()
                tracer.wait(10)
            assert "space" in str(info.value).lower()
            assert not dest.exists()
            first = proxy.client_body_bytes
            assert 0 < first < SIZE
            # Space is back (strace detached): the rerun completes, verified.
            result = await engine.download(
                f"{proxy.url}/big.bin", dest, expected=expected_for(data), chunk_size=BLOCK
            )
        assert dest.read_bytes() == data
        assert result.sha256 == expected_for(data).sha256
