"""Faults inside the accelerator's own processes: a worker killed or hung mid-download.

A worker that dies (SIGKILL, as the OOM killer does) or hangs (SIGSTOP) must not hang
or corrupt the download: its chunks are given to the other workers (or a new one), and
the download completes verified, or fails with a clear AccelError, within bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from accel.errors import AccelError
from accel.fetch import Engine
from tests.reliability.chaos import BLOCK, expected_for
from tests.reliability.origin import NginxOrigin
from tests.support.faultproxy import FaultProxy

SIZE = 16 * 1024 * 1024


def _workers() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if "python" in c.name().lower()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
@pytest.mark.timeout(120)
async def test_worker_dies_or_hangs_mid_download(tmp_path: Path, sig: signal.Signals) -> None:
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(SIZE)
    (www / "f.bin").write_bytes(data)
    dest = tmp_path / "out.bin"
    victims: list[psutil.Process] = []
    # 1 MB/s per response and 8 connections: the download lasts ~2 s, long enough to hit.
    with NginxOrigin(www) as origin, FaultProxy(origin.url, trickle_bps=1_000_000) as proxy:
        async with Engine(workers=2, connections=8, stall_timeout=2.0, backoff_base=0.05) as e:
            await e.start()
            before = {p.pid for p in _workers()}
            task = asyncio.ensure_future(
                e.download(
                    f"{proxy.url}/f.bin", dest, expected=expected_for(data), chunk_size=BLOCK
                )
            )
            while proxy.client_body_bytes < 2 * 1024 * 1024:
                await asyncio.sleep(0.05)
            victims = [p for p in _workers() if p.pid in before][:1]
            assert victims, "no worker process to hit"
            os.kill(victims[0].pid, sig)
            t0 = time.monotonic()
            try:
                result = await asyncio.wait_for(task, 90)
            except AccelError as exc:  # acceptable only as a clear, named failure
                pytest.fail(f"download failed after a worker was hit: [{exc.code}] {exc}")
            finally:
                for v in victims:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        v.send_signal(signal.SIGCONT)
            took = time.monotonic() - t0
    assert result.size == SIZE and dest.read_bytes() == data
    print(f"worker {sig.name}: completed {took:.1f} s after the hit")
