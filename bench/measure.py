"""What every bench of issue 15 measures the same way: wall, tree CPU, tree PSS, the machine.

- CPU seconds are user + system of the whole process tree, from ``os.wait4``'s rusage of
  the direct child (the kernel adds every descendant the child waited for: accel's
  workers, openssl after curl in a pipeline). They hold whatever the load is.
- Peak tree PSS is sampled every 50 ms in a run of its own (``sample_pss=True``): reading
  smaps of a tree costs CPU on two cores and would slow the timed runs.
- ``machine()`` records CPU model, SHA extensions (``sha_ni``), cores, load, commit.
- ``discard(path)`` moves a run's output aside instead of deleting it (see there).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent

#: folders that :func:`discard` moved runs' outputs into, emptied when the bench exits
_TRASH: set[Path] = set()


def _on_tmpfs(path: Path) -> bool:
    """Is ``path`` on a tmpfs (the longest mount point of /proc/mounts above it)?"""
    best, fstype = "", ""
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, kind, *_ = line.split()
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) > len(best):
                best, fstype = mnt, kind
    return fstype == "tmpfs"


def discard(path: Path) -> None:
    """Move ``path`` (a run's output) into a trash folder beside it; deleted at exit.

    Deleting a run's files before the next run makes the next run's creates slow on an
    ext4 without a journal (this VM's root: ``/sys/fs/ext4/vda/journal_task`` is
    ``<none>``): the inode allocator skips every inode deleted in the last 60-300 s,
    reading each one's inode table entry (``find_inode_bit`` -> ``recently_deleted``,
    seen with ``perf record``), so after a 10,000-file run was deleted one create took
    0.4-1.4 ms instead of 20 us, and the tool that creates the most files paid the most.
    A user's install into a models dir has no such deletes just before it. With
    ``ACCEL_BENCH_KEEP_TRASH=1`` the trash stays (a series of benches removes it at
    its end, so no bench pays for the one before).
    """
    if not path.exists():
        return
    if _on_tmpfs(path):
        # A tmpfs has no such allocator, and its trash is memory: kept, a series of
        # 1 GiB installs filled /dev/shm (23 of 24 GiB) and stalled the machine.
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
        return
    trash = path.parent / ".bench-trash"
    trash.mkdir(exist_ok=True)
    if trash not in _TRASH:
        _TRASH.add(trash)
        if not os.environ.get("ACCEL_BENCH_KEEP_TRASH"):
            atexit.register(shutil.rmtree, trash, True)
    os.rename(path, trash / f"{os.getpid()}-{time.monotonic_ns()}")


@dataclass
class Run:
    """One measured command (or a sequence run back to back, as ``curl && openssl``)."""

    wall: float
    cpu: float
    steps_cpu: list[float] = field(default_factory=list)
    peak_pss: int = 0
    stdout: str = ""


def tree_pss(root: psutil.Process) -> int:
    """PSS of ``root`` and its descendants, in bytes (0 for a process that just exited)."""
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def run_one(argv: list[str], *, sample_pss: bool = False, env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to its end; wall, CPU of its tree, optionally its peak tree PSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        peak = 0
        ps = psutil.Process(proc.pid) if sample_pss else None
        while True:
            pid, status, usage = os.wait4(proc.pid, 0 if ps is None else os.WNOHANG)
            if pid:
                break
            assert ps is not None
            peak = max(peak, tree_pss(ps))
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if proc.returncode != 0:
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{argv[:4]} failed ({proc.returncode}): {tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall=wall, cpu=cpu, steps_cpu=[cpu], peak_pss=peak, stdout=stdout)


def run_steps(steps: list[list[str]], *, sample_pss: bool = False) -> Run:
    """Run each argv after the other (a tool, then ``openssl dgst``): summed wall and CPU,
    the largest peak PSS, the last step's stdout."""
    t0 = time.perf_counter()
    runs = [run_one(s, sample_pss=sample_pss) for s in steps]
    return Run(
        wall=time.perf_counter() - t0,
        cpu=sum(r.cpu for r in runs),
        steps_cpu=[r.cpu for r in runs],
        peak_pss=max(r.peak_pss for r in runs),
        stdout=runs[-1].stdout,
    )


def settle(pause: float = 1.0) -> None:
    """sync and a pause between runs: no tool pays for the previous one's writeback."""
    os.sync()
    time.sleep(pause)


def machine() -> dict[str, Any]:
    """CPU model, SHA extensions, cores, load and commit: printed with every table."""
    model = "?"
    flags: set[str] = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu_model": model,
        "sha_ni": "sha_ni" in flags,
        "cores": os.cpu_count(),
        "commit": commit + ("+dirty" if dirty else ""),
        "loadavg": load(),
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def load() -> str:
    """The 1/5/15-minute load averages as /proc/loadavg gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
