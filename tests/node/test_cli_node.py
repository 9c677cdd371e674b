"""`accel node` argument errors: clear one-line messages and exit 2, before any work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PEERS = ["--models-dir", "{tmp}", "--hub", "http://h", "--serve-peers", "--peer-token", "t"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--hub", "http://127.0.0.1:1"], "--models-dir is required"),
        (["--models-dir", "{tmp}"], "--hub is required"),
        (["--models-dir", "{tmp}", "--hub", "http://h", "--listen", "nocolon"], "HOST:PORT"),
        (["--models-dir", "{tmp}", "--hub", "http://h", "--scheduler", "ftp://x"], "ws://"),
        (["--models-dir", "{tmp}", "--hub", "http://h", "--preseed-top", "-1"], "--preseed-top"),
        (["--models-dir", "{tmp}", "--hub", "http://h", "--limit-rate", "fast"], "limit-rate"),
        (["--models-dir", "{tmp}", "--hub", "http://h", "--log-level", "loud"], "--log-level"),
        # a peer server other machines can reach must have a fleet token
        (["--models-dir", "{tmp}", "--hub", "http://h", "--serve-peers"], "needs a fleet token"),
        (
            ["--models-dir", "{tmp}", "--hub", "http://h", "--serve-peers", "--peer-token", " "],
            "--peer-token must not be empty",
        ),
        (
            [*PEERS, "--peer-listen", "127.0.0.1"],
            "--peer-listen '127.0.0.1' is not HOST:PORT",
        ),
        ([*PEERS, "--peer-max-clients", "0"], "--peer-max-clients must be >= 1"),
        ([*PEERS, "--peer-upload-limit", "lots"], "lots"),
        ([*PEERS, "--peer-url", "ftp://x"], "--peer-url"),
        ([*PEERS, "--node-id", "a b"], "cannot be announced"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    accel_cmd: list[str], tmp_path: Path, args: list[str], needle: str
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [*accel_cmd, "node", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
