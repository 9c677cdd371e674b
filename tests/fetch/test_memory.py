"""``accel get``'s memory: peak PSS of its whole process tree <= 64 MiB (issue 15).

A real ``accel get`` of a 96 MiB file from a real nginx on 127.0.0.1, its tree's PSS
sampled every 20 ms. Before: the supervisor imported aiohttp (the CLI's parser built
``serve``'s options from :mod:`accel.listener`), ~9.5 MiB, and mapped 16 MiB windows of
the file to hash them, 16 MiB more; the tree peaked at 74-89 MiB for 1 GiB.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tests.support.nginx import Nginx

MiB = 1 << 20


def _tree_pss(root: psutil.Process) -> tuple[int, list[psutil.Process]]:
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, []
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total, procs


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_accel_get_tree_stays_under_64_mib_and_loads_no_aiohttp(
    tmp_path: Path, nginx: Callable[..., Nginx]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(96 * MiB)
    (src / "f.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    del data
    ng = nginx(src)
    out = tmp_path / "out.bin"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "accel",
            "get",
            ng.file_url("f.bin"),
            "-o",
            str(out),
            "--sha256",
            sha,
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    root = psutil.Process(proc.pid)
    peak, samples, supervisor_maps = 0, 0, ""
    while proc.poll() is None:
        pss, procs = _tree_pss(root)
        if pss:
            samples += 1
            peak = max(peak, pss)
            if len(procs) > 1:  # the workers are up: every import is done by now
                supervisor_maps = _maps(proc.pid) or supervisor_maps
        time.sleep(0.02)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == 0, err
    assert out.stat().st_size == 96 * MiB
    assert samples >= 3, "the download ended before its memory could be sampled"
    assert supervisor_maps, "never saw the supervisor with its workers"
    assert "aiohttp" not in supervisor_maps, "accel get's supervisor loaded aiohttp"
    assert peak <= 64 * MiB, f"peak tree PSS {peak / MiB:.1f} MiB"
