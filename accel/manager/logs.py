"""Structured logs of a models dir and the bug-report archive.

Owns the JSON-lines log file ``<models_dir>/.accel/logs/accel.log`` (stdlib logging; one
object per line: time, level, logger, message, pid and any ``extra`` facts) and
:func:`export_logs`, which packs the logs, ``registry.json``, the manifest cache and
every lock record into one ``tar.gz``. Never prints.

:func:`export_logs` is this module's one OSError seam: whatever fails (a destination that
is a directory, an unwritable or read-only directory, a file where a parent directory
should be) is raised as the :func:`~accel.errors.from_os_error` error naming the archive,
and the temporary file is removed: a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from accel.errors import from_os_error

__all__ = ["JsonLinesHandler", "export_logs"]

_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonLinesHandler(logging.FileHandler):
    """A FileHandler that writes one JSON object per record (appends; many processes)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info and record.exc_info[1] is not None:
            out["exception"] = repr(record.exc_info[1])
        return json.dumps(out, ensure_ascii=False)


def export_logs(models_dir: Path, dest: Path) -> Path:
    """Write one ``tar.gz`` with logs, registry, manifest cache and lock records.

    Raises an :class:`~accel.errors.AccelError` (``is_a_directory``,
    ``permission_denied``, ``read_only``, ``not_a_directory``, ...) naming ``dest``.
    """
    dest = Path(dest)
    action = "write the log archive"
    try:
        if not dest.is_dir():  # checked first: a directory would be found only at the end
            return _export(models_dir, dest)
    except OSError as exc:
        raise from_os_error(exc, action=action, path=dest) from exc
    raise from_os_error(
        IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)),
        action=action,
        path=dest,
        hint=f"name a file to create, e.g. {dest / 'accel-report.tar.gz'}",
    )


def _export(models_dir: Path, dest: Path) -> Path:
    """Pack into a temp file beside ``dest``, then rename; the temp never outlives a failure."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        # mkdir's exist_ok still raises EEXIST when the name is a file: the real problem is
        # that a parent of dest is not a directory.
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), exc.filename) from exc
    members: list[tuple[Path, str]] = []
    state = models_dir / ".accel"
    for path in sorted((state / "logs").glob("*.log*")):
        members.append((path, f"logs/{path.name}"))
    for name in ("registry.json",):
        if (models_dir / name).exists():
            members.append((models_dir / name, name))
    if (state / "manifest_cache.json").exists():
        members.append((state / "manifest_cache.json", "manifest_cache.json"))
    for path in sorted((state / "locks").rglob("*.json")):
        members.append((path, f"locks/{path.relative_to(state / 'locks')}"))
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path, arcname in members:
                try:
                    data = path.read_bytes()
                except OSError:
                    continue  # a lock record removed while we packed: not an error
                info = tarfile.TarInfo(f"accel-report/{arcname}")
                info.size = len(data)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
            about = json.dumps({"models_dir": str(models_dir), "created_at": time.time()})
            info = tarfile.TarInfo("accel-report/about.json")
            info.size = len(about.encode())
            tar.addfile(info, io.BytesIO(about.encode()))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return dest
