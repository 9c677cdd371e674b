"""Run a child process to completion while SIGKILLing it at random moments.

Each round starts the child, waits a random time, and SIGKILLs it (only the main process,
as the OOM killer would, so we also learn whether its helpers notice and exit). The round
after the last kill runs to completion. Between rounds a check callback inspects the
on-disk state (registry parses, files are whole or absent, ...).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CrashLoopReport:
    """What happened over the loop."""

    kills: int = 0
    finished_early: int = 0
    orphans: list[int] = field(default_factory=list)
    final_rc: int | None = None
    final_out: str = ""
    final_err: str = ""
    elapsed_s: float = 0.0


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def install_kill_window(soak: bool) -> dict[str, float]:
    """``min_s``/``max_s`` for killing a ModelManager install or update: the soak kills
    from 0.1 s, the default suite's shorter loop from 0.2 s and up to 1.5 s."""
    return {"min_s": 0.1, "max_s": 1.2} if soak else {"min_s": 0.2, "max_s": 1.5}


def crash_loop(
    argv: Sequence[str],
    *,
    kills: int,
    seed: int,
    min_s: float,
    max_s: float,
    check: Callable[[int], None] | None = None,
    progress: Callable[[], int] | None = None,
    final_timeout: float = 300,
    orphan_grace_s: float = 10,
) -> CrashLoopReport:
    """Kill ``argv`` ``kills`` times at uniform random moments in [min_s, max_s].

    With ``progress`` (a counter such as the body bytes the origin sent), the random wait
    counts from the moment the counter first moves in that round, so that a slow start on
    a loaded machine does not turn every round into a kill before the first byte.
    """
    rng = random.Random(seed)
    report = CrashLoopReport()
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for i in range(kills):
        base = progress() if progress is not None else 0
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait = rng.uniform(min_s, max_s)
        if progress is not None:
            deadline = time.monotonic() + 60
            while progress() <= base and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        try:
            proc.wait(wait)
            report.finished_early += 1  # finished before the kill: the job is done
            if check is not None:
                check(i)
            break
        except subprocess.TimeoutExpired:
            helpers = _descendants(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            report.kills += 1
            _, alive = psutil.wait_procs(helpers, timeout=orphan_grace_s)
            for p in alive:
                report.orphans.append(p.pid)
                p.kill()
        if check is not None:
            check(i)
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=final_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    report.final_rc, report.final_out, report.final_err = proc.returncode, out, err
    report.elapsed_s = time.monotonic() - t0
    return report
