"""An interrupted one-request download (a small file fetched whole) keeps what it wrote."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from accel.fetch import Engine, Expected
from accel.fetch.checkpoint import load_checkpoint, part_path, revalidate
from tests.reliability.origin import NginxOrigin
from tests.support.faultproxy import FaultProxy


def _written(part: Path, n: int) -> bool:
    try:
        return part.stat().st_size >= n
    except FileNotFoundError:
        return False


async def test_a_cancelled_whole_file_request_leaves_a_resumable_part(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(3 << 20)
    (www / "f.bin").write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "out" / "f.bin"
    with NginxOrigin(www) as origin, FaultProxy(origin.url, trickle_bps=1_000_000) as proxy:
        url = f"{proxy.url}/f.bin"
        async with Engine(workers=1, connections=2) as engine:
            # chunk_size = the file: the one-request path, whatever the connections.
            job = asyncio.ensure_future(
                engine.download(url, dest, expected=Expected(size=len(data), sha256=want),
                                chunk_size=len(data))
            )  # fmt: skip
            # Half written: that path emits no progress events, the .part grows.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not _written(part_path(dest), len(data) // 2):
                assert loop.time() < deadline and not job.done(), "never got half way"
                await asyncio.sleep(0.01)
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
        cp = load_checkpoint(dest)
        assert cp is not None and part_path(dest).exists()
        assert part_path(dest).stat().st_size == len(data)  # what a resume trusts
        kept = sum(c.end - c.start for c in revalidate(dest, cp))
        assert kept >= len(data) // 2 - (1 << 20)
        proxy.trickle_bps = None
        async with Engine(workers=1, connections=2) as engine:
            r = await engine.download(url, dest, expected=Expected(size=len(data), sha256=want))
        assert r.sha256 == want and r.resumed_bytes >= kept
        assert r.bytes_fetched <= len(data) - kept + (1 << 20)
