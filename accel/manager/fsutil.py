"""Durable small-file writes and safe local paths for the models dir.

Every node-side JSON file (registry, manifest cache, lock records) is written by the
one atomic-write routine of :mod:`accel.durable`, re-exported here. Also the one ``syncfs`` that makes
a version's fetched files durable together (see ``install.py``). Also validates the path segments a
hub hands us (model ids, versions, file paths) before they touch the filesystem.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from accel.durable import atomic_write_bytes, fsync_dir
from accel.errors import UnsafePathError

__all__ = [
    "atomic_write_bytes",
    "exchange_dirs",
    "fsync_dir",
    "refuse_symlinks",
    "safe_relpath",
    "safe_segment",
    "sync_filesystem",
]


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_syncfs = _load_syncfs()

#: ``renameat2(2)`` flag: swap two existing names atomically
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2  # glibc 2.28 and later
    except (OSError, AttributeError):  # pragma: no cover - not Linux, or an old libc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_renameat2 = _load_renameat2()


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap the directories at ``a`` and ``b`` in one step (``renameat2 RENAME_EXCHANGE``).

    Both names exist before and after, so a reader of either path sees a whole
    directory at every instant. Returns ``False``, having changed nothing, when the
    kernel or the filesystem cannot exchange (old kernel, some network filesystems);
    the caller then falls back to two renames. Other errors raise ``OSError``.
    """
    if _renameat2 is None:  # pragma: no cover - not Linux
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2: {os.strerror(err)}", str(a), None, str(b))


def sync_filesystem(path: Path) -> None:
    """Make everything written to the filesystem holding ``path`` durable (``syncfs(2)``).

    One call replaces an fsync per file and per directory when a version has hundreds of
    files; it also reports writeback errors of that filesystem (Linux 5.8 and later).
    Without ``syncfs`` (not Linux), ``sync(2)`` of everything.
    """
    if _syncfs is None:  # pragma: no cover - not Linux
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


def safe_segment(value: str, what: str) -> str:
    """A single path segment (model id part, version) that cannot leave its directory."""
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\0" in value
        or value.startswith(".")
        or ":" in value
    ):
        raise UnsafePathError(f"unsafe {what}: {value!r}", path=value)
    return value


@functools.lru_cache(maxsize=1 << 16)
def safe_relpath(value: str, what: str = "file path") -> PurePosixPath:
    """A relative POSIX path whose every segment is safe (no '..', absolute, NUL, '\\').

    Cached (an unsafe value raises every time): an install asks it of each file at
    each step, seven times per file, and a ``PurePosixPath`` is immutable.
    """
    if not value or value.startswith("/") or "\\" in value or "\0" in value:
        raise UnsafePathError(f"unsafe {what}: {value!r}", path=value)
    parts = value.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(f"unsafe {what}: {value!r}", path=value)
    return PurePosixPath(*parts)


def refuse_symlinks(root: Path, rel: PurePosixPath, checked: set[Path] | None = None) -> Path:
    """``root / rel``, after checking no existing component below ``root`` is a symlink.

    A symlink planted inside the models dir (``<model>`` or a sub-folder of a version)
    would make every later write land outside it; we refuse instead of following it.
    ``checked`` holds the folders one caller has already checked (a version's files
    share them): each is looked at once, and the folders checked here are added.
    """
    checked = set() if checked is None else checked
    folder = root.joinpath(*rel.parts[:-1])
    if folder not in checked:
        path = root
        for part in rel.parts[:-1]:
            path = path / part
            if path not in checked:
                _refuse_link(path)
                checked.add(path)
    path = folder / rel.name
    _refuse_link(path)
    return path


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise UnsafePathError(
            f"{path} is a symbolic link; refusing to write through it",
            hint="remove the link from the models dir, then rerun",
            path=str(path),
        )
