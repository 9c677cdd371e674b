"""``accel get`` as a real process: output modes, usage errors, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from accel.fetch.checkpoint import load_checkpoint
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

ACCEL = [sys.executable, "-m", "accel"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ACCEL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_json_events_and_verified_file(origin: Nginx, www: Path, tmp_path: Path) -> None:
    want = sha256_of(www / "big.bin")
    r = run("get", origin.file_url("big.bin"), "-o", str(tmp_path), "--sha256", want, "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["verified", "done"]
    done = events[-1]
    assert done["sha256"] == want and done["size"] == 24 << 20
    assert sha256_of(tmp_path / "big.bin") == want


def test_lines_when_not_a_terminal_and_name_from_url(origin: Nginx, tmp_path: Path) -> None:
    r = run("get", origin.file_url("small.bin"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "saved small.bin" in r.stdout
    assert (tmp_path / "small.bin").stat().st_size == 100_000
    q = run("get", origin.file_url("small.bin"), "-o", str(tmp_path / "q.bin"), "--quiet")
    assert q.returncode == 0 and q.stdout == "" and q.stderr == ""


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--limit-rate", "fast"], "--limit-rate"),
        (["--chunk-size", "8Q"], "--chunk-size"),
        (["--size", "-1"], "--size"),
        (["--connections", "many"], "--connections"),
        (["--workers", "0"], "--workers"),
        (["--sha256", "abc"], "--sha256"),
        (["--header", "NoColon"], "--header"),
        (["--manifest", "m.json"], "--manifest"),
    ],
)
def test_bad_option_is_a_usage_error_naming_it(args: list[str], option: str) -> None:
    r = run("get", "http://127.0.0.1:9/x.bin", *args)
    assert r.returncode == 2
    assert option in r.stderr
    assert "Traceback" not in r.stderr


def test_http_error_is_one_line_exit_1(origin: Nginx, tmp_path: Path) -> None:
    r = run("get", origin.file_url("nope.bin"), "-o", str(tmp_path / "n.bin"))
    assert r.returncode == 1
    assert "404" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_manifest_gives_size_sha_and_blocks(origin: Nginx, www: Path, tmp_path: Path) -> None:
    import blake3

    data = (www / "small.bin").read_bytes()
    block = 32 * 1024
    manifest = {
        "model_id": "m",
        "version": "1",
        "size_bytes": len(data),
        "checksum_sha256": "0" * 64,
        "updated_at": "2026-01-01T00:00:00Z",
        "files": [
            {
                "path": "w/small.bin",
                "size_bytes": len(data),
                "sha256": sha256_of(www / "small.bin"),
                "chunks": {
                    "algo": "blake3",
                    "size": block,
                    "digests": [
                        blake3.blake3(data[i : i + block]).hexdigest()
                        for i in range(0, len(data), block)
                    ],
                },
            }
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    args = ["--manifest", str(tmp_path / "m.json")]
    r = run("get", origin.file_url("small.bin"), "-o", str(tmp_path / "s.bin"), *args,
            "--file", "w/small.bin", "--chunk-size", "32K")  # fmt: skip
    assert r.returncode == 0, r.stderr
    bad = run("get", origin.file_url("small.bin"), "-o", str(tmp_path / "t.bin"), *args,
              "--file", "w/other.bin")  # fmt: skip
    assert bad.returncode == 2 and "--file" in bad.stderr


def test_kill_9_then_rerun_fetches_only_the_rest(
    nginx: Callable[..., Nginx], www: Path, tmp_path: Path
) -> None:
    slow = nginx(www, limit_rate="3m")
    dest = tmp_path / "big.bin"
    size = 24 << 20
    args = ["get", slow.file_url("big.bin"), "-o", str(dest), "--quiet"]
    args += ["--connections", "4", "--chunk-size", "1M", "--workers", "2"]
    proc = subprocess.Popen([*ACCEL, *args])
    try:
        deadline = time.monotonic() + 30
        have = 0
        while time.monotonic() < deadline:
            try:
                cp = load_checkpoint(dest)
            except Exception:
                cp = None
            have = sum(c.end - c.start for c in cp.chunks) if cp else 0
            if have >= size // 3:
                break
            time.sleep(0.05)
        assert have >= size // 3, "the download never checkpointed a third"
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        psutil.wait_procs(children, timeout=10)  # workers notice the parent is gone
        assert not any(c.is_running() and c.status() != "zombie" for c in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first_run = slow.bytes_sent()
    assert first_run < size
    r = run(*args[:1], slow.file_url("big.bin"), *args[2:], "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    done = events[-1]
    assert done["resumed_bytes"] >= size // 3
    # the rerun said what it resumed, before fetching, and its rate is over this run's bytes
    resuming = next(e for e in events if e["event"] == "resuming")
    assert resuming["bytes_kept"] >= size // 3 and resuming["bytes_total"] == size
    assert resuming["bytes_kept"] + resuming["bytes_to_fetch"] == size
    assert abs(done["speed_bps"] - done["bytes_fetched"] / done["elapsed_s"]) < 0.01 * size
    assert sha256_of(dest) == sha256_of(www / "big.bin")
    # Everything the origin sent over both runs: the file once, plus at most the chunks
    # that were in flight at the kill (4 connections x 1 MiB) and headers.
    assert slow.bytes_sent() <= size + 5 * (1 << 20)


def test_progress_bar_on_a_terminal(origin: Nginx, tmp_path: Path) -> None:
    """Under a real pseudo-terminal (util-linux ``script``) rich draws a bar with MiB/s."""
    cmd = " ".join([*ACCEL, "get", origin.file_url("big.bin"), "-o", str(tmp_path / "t.bin")])
    r = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout
    assert "━" in r.stdout and "MiB/s" in r.stdout and "24.0 MiB / 24.0 MiB" in r.stdout
    assert (tmp_path / "t.bin").stat().st_size == 24 << 20
