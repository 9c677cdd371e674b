"""A kill -9 keeps what the running chunks wrote, not only the finished chunks.

Before, a checkpoint recorded finished chunks only: with every chunk still running
(here four 8 MiB chunks, each trickled at 2 MB/s) a kill -9 threw away every byte
fetched, and the rerun fetched them all again. Now each checkpoint also records each
running chunk's written prefix with the xxh3 its worker reported, so the loss is the
bytes since the last checkpoint (8 MiB written, or a second) and the last reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from accel.fetch.checkpoint import CheckpointError, load_checkpoint
from tests.reliability.origin import NginxOrigin
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule

MiB = 1024 * 1024


def test_a_kill_mid_chunk_keeps_the_written_prefixes(tmp_path: Path) -> None:
    size = 32 * MiB
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(size)
    (www / "f.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    with NginxOrigin(www) as origin, FaultProxy(origin.url, trickle_bps=2_000_000) as proxy:
        argv = [sys.executable, "-m", "accel", "get", f"{proxy.url}/f.bin", "-o", str(dest)]
        argv += ["--sha256", sha, "--connections", "4", "--chunk-size", "8M", "--quiet"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Killed once 20 MiB have been sent: 5 MiB per connection, no chunk finished.
        deadline = time.monotonic() + 60
        while proxy.client_body_bytes < 20 * MiB:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the download never reached 20 MiB"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        sent_at_kill = proxy.client_body_bytes
        cp = load_checkpoint(dest)
        kept = sum(c.end - c.start for c in cp.chunks) if cp is not None else 0
        # Lost at most: the 8 MiB between checkpoints and each connection's last
        # report (1 MiB plus one read of 256 KiB), and what was on its way.
        assert kept >= sent_at_kill - 8 * MiB - 4 * (MiB + 256 * 1024) - 2 * MiB, (
            kept,
            sent_at_kill,
        )
        assert kept < size
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        total = proxy.client_body_bytes
    assert dest.read_bytes() == data
    # the rerun fetched what was not kept, and what was kept was not fetched again
    assert total - size <= sent_at_kill - kept + 2 * MiB, (total, size, sent_at_kill, kept)


def test_bytes_written_before_a_chunks_first_report_are_kept(tmp_path: Path) -> None:
    """Each of four chunks gets 768 KiB at once and then nothing: no chunk reaches its
    first progress report (every 1 MiB or 0.1 s, checked after a read), so a checkpoint
    built from the reports kept none of the 3 MiB written. The workers' shared table
    (accel/fetch/written.py) says what each wrote after every write: the next
    checkpoint holds it, and a kill -9 keeps it."""
    size, head = 32 * MiB, 768 * 1024
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(size)
    (www / "f.bin").write_bytes(data)
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    stall = FaultRule(FaultKind.STALL_BODY, times=None, after_bytes=head, stall_s=60)
    with NginxOrigin(www) as origin, FaultProxy(origin.url, [stall]) as proxy:
        argv = [sys.executable, "-m", "accel", "get", f"{proxy.url}/f.bin", "-o", str(dest)]
        argv += ["--connections", "4", "--chunk-size", "8M", "--quiet"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            kept = 0
            deadline = time.monotonic() + 20
            while kept < 4 * head:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, f"the checkpoints kept {kept} bytes"
                time.sleep(0.05)
                with contextlib.suppress(CheckpointError):
                    cp = load_checkpoint(dest)
                    kept = sum(c.end - c.start for c in cp.chunks) if cp is not None else 0
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    cp = load_checkpoint(dest)
    assert cp is not None
    part = dest.with_name(dest.name + ".part").read_bytes()
    for c in cp.chunks:  # what it claims is what was written
        assert part[c.start : c.end] == data[c.start : c.end]
