"""Durable small-file writes: the one atomic-replace routine every layer uses.

The hub's store, the fetch checkpoint and the node's registry, manifest cache and lock
records all go through :func:`atomic_write_bytes`: a temp file private to the writer in
the same directory, write + fsync, ``os.replace``, fsync of the directory. An fsync
error means the data is not durable, so the rename never happens after one. The temp
name carries the writer's pid, so :func:`sweep_dead_temps` can remove what a killed
writer left without touching a live writer's file.

Standard library only: the fetch worker's process and the hub import it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write_bytes", "fsync_dir", "pid_alive", "sweep_dead_temps", "temp_name"]


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """``.<name>.<pid>.<random>.tmp`` beside ``path``: never shared by two writers."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never a mix.

    Two writers never share a temp file, so correctness does not depend on any lock
    being honoured. ``durable=False`` skips the fsyncs, for records that only describe
    live processes (lock records): after a power cut they are stale anyway.
    """
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def sweep_dead_temps(path: Path) -> int:
    """Remove the temp files of ``path``'s writers that died mid-write; returns how many.

    Only files named by :func:`temp_name` whose pid is not alive (and is not ours).
    """
    removed = 0
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
            pid = tmp.name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running (ours to signal or not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
