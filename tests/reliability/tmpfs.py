"""A small tmpfs mounted for one test: a real filesystem that really fills up (ENOSPC)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def require_root() -> None:
    """Skip, saying why, when mounting is not possible."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; run the suite as root to test disk full")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` ("4m") at ``where``; unmounted on exit, whatever happens."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        r = subprocess.run(["umount", str(where)], capture_output=True, check=False)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def resize(where: Path, size: str) -> None:
    """Grow or shrink a mounted tmpfs (as freeing space on a real disk would)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def fill(where: Path, leave: int = 0) -> Path:
    """Write a filler file until only ``leave`` bytes are free; returns the filler's path."""
    filler = where / "filler.bin"
    with open(filler, "ab") as f:
        block = b"\0" * (1 << 20)
        while True:
            free = os.statvfs(where).f_bavail * os.statvfs(where).f_frsize
            n = min(len(block), free - leave)
            if n <= 0:
                break
            try:
                f.write(block[:n])
                f.flush()
            except OSError:
                break
    return filler
