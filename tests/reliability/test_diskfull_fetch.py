"""Disk full at the accelerator level, on a real small tmpfs and by injected ENOSPC.

- before start: the engine refuses before fetching the body, with the needed and free
  byte counts, and succeeds once space is freed;
- the disk fills up mid-download (another writer takes every free block): the ``.part``
  is preallocated and the checkpoint saves in place, so the download goes on to a
  verified file; interrupted on the full disk, it keeps every finished chunk and the
  rerun fetches only the rest;
- mid-download: ``strace`` injects ENOSPC into the workers' ``pwrite64`` (the tmpfs cannot
  run out under a preallocated file); the engine fails with InsufficientDiskSpaceError,
  leaves no final file, and a rerun completes from the kept chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from accel.errors import CheckpointError, InsufficientDiskSpaceError
from accel.fetch import Engine, ProgressEvent
from accel.fetch.checkpoint import load_checkpoint
from tests.reliability.chaos import BLOCK, expected_for
from tests.reliability.origin import NginxOrigin
from tests.reliability.tmpfs import fill, require_root, resize, tmpfs
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


def _recorded(dest: Path) -> int:
    """Bytes the checkpoint on disk holds as done (0 while there is none)."""
    with contextlib.suppress(CheckpointError):
        cp = load_checkpoint(dest)
        return sum(c.end - c.start for c in cp.chunks) if cp is not None else 0
    return 0


async def _until(ok: Callable[[], bool], running: asyncio.Future[Any], what: str) -> None:
    """Poll for a state of the running download (never a fixed sleep)."""
    deadline = time.monotonic() + 60
    while not ok():
        if running.done():
            running.result()  # raises what the download raised
            raise AssertionError(f"the download ended before {what}")
        assert time.monotonic() < deadline, f"no {what} within 60 s"
        await asyncio.sleep(0.01)


# 6 MiB of data, the engine's 16 MiB margin, and room for the checkpoint: the space
# check at the start passes, then a filler takes every block that is left.
FILLS_UP = "24m"


async def test_a_disk_filling_up_mid_download_does_not_stop_it(
    tmp_path: Path, source: tuple[Path, bytes]
) -> None:
    """Failed on the temp + rename checkpoint: its next save met ENOSPC and ended the
    download with disk_full, losing the progress since the save before."""
    require_root()
    www, data = source
    with (
        tmpfs(tmp_path / "mnt", FILLS_UP) as mnt,
        NginxOrigin(www) as origin,
        FaultProxy(origin.url, trickle_bps=1_000_000) as proxy,
    ):
        dest = mnt / "big.bin"
        async with Engine(workers=1, connections=2, checkpoint_s=0.1) as engine:
            running = asyncio.ensure_future(
                engine.download(
                    f"{proxy.url}/big.bin", dest, expected=expected_for(data), chunk_size=BLOCK
                )
            )
            await _until(lambda: _recorded(dest) > 0, running, "a first checkpoint")
            at_fill = _recorded(dest)
            await asyncio.to_thread(fill, mnt)
            assert os.statvfs(mnt).f_bavail == 0
            # Checkpoints saved on the full disk record more than the one before the fill.
            await _until(lambda: _recorded(dest) > at_fill, running, "a save on the full disk")
            assert os.statvfs(mnt).f_bavail == 0
            result = await running
        assert result.size == SIZE and dest.read_bytes() == data


async def test_a_download_stopped_on_a_full_disk_keeps_its_progress(
    tmp_path: Path, source: tuple[Path, bytes]
) -> None:
    """Stopped (as Ctrl-C does) after the disk filled up, the download keeps every chunk
    finished up to then, and the rerun after space is freed fetches only the rest. Failed
    on the temp + rename checkpoint (disk_full at its first save on the full disk)."""
    require_root()
    www, data = source
    with (
        tmpfs(tmp_path / "mnt", FILLS_UP) as mnt,
        NginxOrigin(www) as origin,
        FaultProxy(origin.url, trickle_bps=1_000_000) as proxy,
    ):
        dest = mnt / "big.bin"
        events: list[ProgressEvent] = []
        async with Engine(workers=1, connections=2, checkpoint_s=0.1) as engine:
            running = asyncio.ensure_future(
                engine.download(
                    f"{proxy.url}/big.bin",
                    dest,
                    expected=expected_for(data),
                    chunk_size=BLOCK,
                    progress=events.append,
                )
            )
            await _until(lambda: _recorded(dest) > 0, running, "a first checkpoint")
            filler = await asyncio.to_thread(fill, mnt)
            assert os.statvfs(mnt).f_bavail == 0

            def committed() -> int:
                return max((e.committed for e in events), default=0)

            await _until(lambda: committed() >= SIZE // 2, running, "half of the file")
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            stopped_at = committed()
            assert _recorded(dest) >= stopped_at  # saved on the full disk
            filler.unlink()  # space is back
            sent = proxy.client_body_bytes
            result = await engine.download(
                f"{proxy.url}/big.bin", dest, expected=expected_for(data), chunk_size=BLOCK
            )
        assert dest.read_bytes() == data
        assert result.resumed_bytes >= stopped_at
        # Only what was missing: one block of slack for a raced last chunk.
        rerun = proxy.client_body_bytes - sent
        assert rerun <= SIZE - result.resumed_bytes + BLOCK <= SIZE - stopped_at + BLOCK


def _traced_by(pid: int) -> set[int]:
    """The TracerPid of every thread of ``pid`` (0: a thread nobody traces yet)."""
    out = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):  # a thread that just ended
            for line in status.read_text().splitlines():
                if line.startswith("TracerPid:"):
                    out.add(int(line.split()[1]))
    return out


async def _until_attached(tracer: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Wait (20 s deadline) until ``tracer`` traces every thread of every pid."""
    deadline = asyncio.get_running_loop().time() + 20
    while any(_traced_by(pid) != {tracer.pid} for pid in pids):
        assert tracer.poll() is None, tracer.stderr.read() if tracer.stderr else tracer.returncode
        assert asyncio.get_running_loop().time() < deadline, "strace did not attach in 20 s"
        await asyncio.sleep(0.02)


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
            pids = engine.pool.pids  # this engine's workers (not an earlier test's leftovers)
            assert pids, "no worker processes found"
            args = ["strace", "-qq", "-f", "-e", "trace=pwrite64"]
            # Counted per thread (a worker reuses its threads across tasks): a third write fails.
            args += ["-e", "inject=pwrite64:error=ENOSPC:when=3+", "-o", "/dev/null"]
            for pid in pids:
                args += ["-p", str(pid)]
            tracer = subprocess.Popen(args, stderr=subprocess.PIPE)
            try:
                await _until_attached(tracer, pids)
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
