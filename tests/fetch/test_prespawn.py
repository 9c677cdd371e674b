"""Workers started before the engine (``accel get``'s start): adopted, or gone with us.

``accel get`` starts its workers first thing: forked children when its process runs one
thread (no interpreter start, no imports of their own), fresh interpreters otherwise.
The next pool must adopt exactly those processes (not start more), and workers nobody
adopts must not outlive their parent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

_ADOPT = r"""
import asyncio, json, sys
from accel.fetch import Engine
from accel.fetch.pool import DEFAULT_WORKER_NICE, _PRESPAWNED, prespawn

prespawn(2, nice=DEFAULT_WORKER_NICE)
early = sorted(p.pid for p, _, _ in _PRESPAWNED)

async def main():
    async with Engine(workers=2) as engine:
        r = await engine.download(sys.argv[1], sys.argv[2])
        await asyncio.wait_for(asyncio.gather(*engine.pool._spawning), 30)
        print(json.dumps({"early": early, "used": sorted(engine.pool.pids),
                          "left": len(_PRESPAWNED), "sha256": r.sha256}))

asyncio.run(main())
"""

_LEAVE = r"""
from accel.fetch.pool import _PRESPAWNED, prespawn
prespawn(2, nice=10)
print(*[p.pid for p, _, _ in _PRESPAWNED], flush=True)
"""


def test_the_engine_adopts_the_prespawned_workers(origin: Nginx, www: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    r = subprocess.run(
        [sys.executable, "-c", _ADOPT, origin.file_url("small.bin"), str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert len(got["early"]) == 2
    assert got["used"] == got["early"], got  # the same two processes, no others
    assert got["left"] == 0
    assert got["sha256"] == sha256_of(www / "small.bin")


def test_prespawned_workers_nobody_adopts_leave_with_their_parent() -> None:
    r = subprocess.run([sys.executable, "-c", _LEAVE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pids = [int(p) for p in r.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p
            for p in pids
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.05)
    assert alive == [], "prespawned workers outlived the process that started them"


_HOLD = r"""
import sys, threading
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
from accel.fetch.pool import _PRESPAWNED, prespawn
prespawn(2, nice=10)
print(*[p.pid for p, _, _ in _PRESPAWNED], flush=True)
sys.stdin.readline()
"""


def _started_by_prespawn(mode: str) -> list[list[str]]:
    """The command lines of the workers ``prespawn`` starts in a process (with a thread
    running beside it or not), read while that process still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        assert all(psutil.Process(p).ppid() == proc.pid for p in pids)
        return [psutil.Process(p).cmdline() for p in pids]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(30)


def test_prespawned_workers_are_forked_from_a_process_of_one_thread() -> None:
    # a forked child keeps its parent's command line; a fresh worker's names the worker
    for cmdline in _started_by_prespawn("alone"):
        assert cmdline[-1] == "alone", cmdline
        assert not any("main_from_argv" in a for a in cmdline), cmdline


def test_prespawned_workers_are_fresh_interpreters_beside_a_thread() -> None:
    # forking beside a running thread could copy a lock that thread holds
    for cmdline in _started_by_prespawn("thread"):
        assert any("main_from_argv" in a for a in cmdline), cmdline
