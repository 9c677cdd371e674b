"""Disk space: is there room for a whole version before its first byte is fetched?

Owns the space policy (:func:`space_needed`, pure) and the check against the filesystem
(:func:`check_space`). ENOSPC during a download is translated by :func:`disk_error`.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from accel.errors import InsufficientDiskSpaceError

__all__ = ["check_space", "disk_error", "is_enospc", "margin_for", "space_needed"]


def margin_for(need: int) -> int:
    """Headroom kept free beyond the bytes themselves: 1 % plus 1 MiB (metadata, temp)."""
    return need // 100 + (1 << 20) if need else 0


def space_needed(sizes: list[int], already_held: list[int]) -> int:
    """Bytes still to write: each file's size minus what its ``.part`` already holds."""
    return sum(max(0, size - held) for size, held in zip(sizes, already_held, strict=True))


def check_space(directory: Path, need: int) -> None:
    """Raise :class:`InsufficientDiskSpaceError` (needed, free) if ``need`` does not fit."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    wanted = need + margin_for(need)
    if wanted > free:
        raise InsufficientDiskSpaceError(
            f"not enough disk space in {directory}: need {wanted} bytes "
            f"({need} + margin), {free} free",
            path=str(directory),
            needed=wanted,
            free=free,
        )


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_error(exc: OSError, path: Path) -> InsufficientDiskSpaceError:
    """ENOSPC/EDQUOT as the error users see (free space measured now)."""
    try:
        free = shutil.disk_usage(path if path.exists() else path.parent).free
    except OSError:
        free = -1
    return InsufficientDiskSpaceError(
        f"disk full while writing {path}: {os.strerror(exc.errno or errno.ENOSPC)}",
        path=str(path),
        needed=None,
        free=free,
    )
