"""Crash loop at the accelerator level: one large download SIGKILLed again and again.

After every kill the partial state must be resumable (the final file absent or whole),
the workers of the killed process must exit on their own, and the total body bytes
sent by the origin stay within the file size plus a bounded waste per kill. The short
version (default suite) kills 5 times; ``ACCEL_SOAK=1`` kills 30 times.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.reliability.crashloop import crash_loop
from tests.reliability.figures import record_figure
from tests.reliability.origin import NginxOrigin
from tests.support.faultproxy import FaultProxy

SOAK = os.environ.get("ACCEL_SOAK") == "1"
MiB = 1024 * 1024


@pytest.mark.timeout(900 if SOAK else 150)
def test_download_killed_repeatedly_completes_verified(tmp_path: Path) -> None:
    size = (128 if SOAK else 24) * MiB
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(size)
    (www / "big.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "out" / "big.bin"
    kills = 30 if SOAK else 5

    def check(_: int) -> None:
        if dest.exists():  # a final name only ever holds the whole, verified file
            assert dest.stat().st_size == size
            assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha

    # 1 MB/s per response, 4 connections: the download takes seconds, so kills land
    # mid-transfer.
    with NginxOrigin(www) as origin, FaultProxy(origin.url, trickle_bps=1_000_000) as proxy:
        argv = ["-m", "tests.reliability.drivers", "fetch", f"{proxy.url}/big.bin"]
        argv += [str(dest), str(size), sha]
        report = crash_loop(
            argv,
            kills=kills,
            seed=5,
            min_s=0.2,
            max_s=1.2,
            check=check,
            progress=lambda: proxy.client_body_bytes,
        )
        sent = proxy.client_body_bytes
    line = (
        f"{report.kills} kills, {report.finished_early} early, "
        f"origin sent {sent / MiB:.1f} MiB for {size / MiB:.0f} MiB "
        f"({(sent - size) / max(report.kills, 1) / MiB:.1f} MiB extra per kill), "
        f"orphan workers {len(report.orphans)}, {report.elapsed_s:.1f} s"
    )
    record_figure(
        "crash_loop_fetch",
        "engine download SIGKILLed U(0.2, 1.2) s after its first byte, restarted",
        line,
    )
    print(
        f"crash loop (fetch): {report.kills} kills, {report.finished_early} early, "
        f"origin sent {sent / MiB:.1f} MiB for {size / MiB:.0f} MiB, {report.elapsed_s:.1f} s"
    )
    assert report.final_rc == 0, report.final_err
    assert report.finished_early == 0, "the download finished before it was killed enough"
    assert report.orphans == [], "worker processes outlived their killed parent"
    assert dest.read_bytes() == data
    assert sent <= size + report.kills * 64 * MiB
    leftovers = sorted(p.name for p in dest.parent.iterdir())
    assert leftovers == ["big.bin"], leftovers


async def test_checkpoint_temp_of_a_killed_writer_is_cleaned(tmp_path: Path) -> None:
    """A SIGKILL between writing ``.<name>.part.json.<pid>.<rand>.tmp`` and its rename leaves that
    temp file behind (found by the 30-kill soak); the finished download removes it."""
    from accel.fetch import Engine, Expected

    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(1_000_000)
    (www / "f.bin").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    # What the killed run leaves: its .part (created before any checkpoint) and the
    # temp file of the checkpoint it was writing.
    (out / "f.bin.part").write_bytes(os.urandom(1000))
    stale = out / ".f.bin.part.json.999999999.0a1b2c3d.tmp"  # no such pid
    stale.write_bytes(b"{")
    with NginxOrigin(www) as origin:
        async with Engine(workers=1, connections=2) as engine:
            await engine.download(
                f"{origin.url}/f.bin",
                out / "f.bin",
                expected=Expected(size=len(data), sha256=hashlib.sha256(data).hexdigest()),
            )
    assert sorted(p.name for p in out.iterdir()) == ["f.bin"]
