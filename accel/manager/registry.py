"""``registry.json``: the one record of what is installed in a models dir.

Owns reading, validating and rewriting the registry. Every change is a read-modify-write
under the registry lock (``.accel/registry.lock``, an OS-level lock that a crash releases)
and is published by :func:`~accel.manager.fsutil.atomic_write_bytes`, so a reader, or a
process killed mid-write, never sees a torn file. The lock only serialises writers; if a
filesystem ignores it, the worst case is a lost update, never a corrupt file.

A full disk must not keep an install from recording why it failed: the store keeps a
preallocated spare file (``.accel/registry.reserve``, twice the registry's size) and,
when a write fails with ENOSPC, gives that space up and writes again.
Never downloads and never decides states (see ``states.py``).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import portalocker
from pydantic import ValidationError

from accel.durable import sweep_dead_temps
from accel.errors import ConfigError
from accel.manager.fsutil import atomic_write_bytes
from accel.schema import REGISTRY_SCHEMA_VERSION, InstallRecord, Registry

__all__ = ["RegistryStore", "install_key"]

T = TypeVar("T")

_RESERVE_MIN = 64 * 1024


def install_key(model_id: str, version: str) -> str:
    """The registry key of one model version: ``id@version``."""
    return f"{model_id}@{version}"


class RegistryStore:
    """Read and atomically rewrite ``<models_dir>/registry.json``."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.path = models_dir / "registry.json"
        self.lock_path = models_dir / ".accel" / "registry.lock"
        self.reserve_path = models_dir / ".accel" / "registry.reserve"
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._reserved = 0
        #: the bytes this store last wrote and the registry they were made from: an
        #: update that finds exactly those bytes on disk starts from that object instead
        #: of parsing and validating them again (10,000 files: ~0.1 s a save)
        self._written: tuple[bytes, Registry] | None = None

    def read(self) -> Registry:
        """The current registry (empty if none yet); a foreign schema is a ConfigError."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Registry()
        return self._parse(raw)

    def _parse(self, raw: bytes) -> Registry:
        try:
            data = json.loads(raw)
            version = data.get("schema_version") if isinstance(data, dict) else None
            if version is not None and version > REGISTRY_SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path} has schema version {version}, newer than this accel "
                    f"understands ({REGISTRY_SCHEMA_VERSION})",
                    hint="upgrade accel, or use another --models-dir",
                    path=str(self.path),
                )
            return Registry.model_validate(data)
        except (ValueError, ValidationError) as exc:
            raise ConfigError(
                f"{self.path} is not a valid registry: {exc}",
                hint="restore it from `accel logs export`, or remove it and reinstall",
                path=str(self.path),
            ) from exc

    def get(self, model_id: str, version: str) -> InstallRecord | None:
        """One install record, or ``None``."""
        return self.read().installs.get(install_key(model_id, version))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry lock (blocking; writers hold it for milliseconds)."""
        with portalocker.Lock(
            str(self.lock_path), mode="a", timeout=60, check_interval=0.005, fail_when_locked=False
        ):
            yield

    def update(self, change: Callable[[Registry], T]) -> T:
        """Apply ``change`` to a fresh read of the registry and write it back atomically."""
        with self.locked():
            written, self._written = self._written, None  # a failed change leaves no cache
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                reg = Registry()
            else:
                # Same bytes, same registry: nobody wrote since (compared, not stat'ed, so
                # a reused inode or a coarse mtime cannot fool it).
                reg = written[1] if written is not None and written[0] == raw else self._parse(raw)
            result = change(reg)
            self._write(reg)
            return result

    def _write(self, reg: Registry) -> None:
        reg.schema_version = REGISTRY_SCHEMA_VERSION
        data = reg.model_dump_json(indent=1).encode()
        try:
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._give_up_reserve():
                raise
            atomic_write_bytes(self.path, data)
        self._written = (data, reg)
        self._keep_reserve(2 * len(data))

    def _keep_reserve(self, size: int) -> None:
        """Hold at least ``size`` bytes in the spare file (best effort, under the lock)."""
        size = max(_RESERVE_MIN, size)
        if self._reserved >= size:
            return
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            held = os.fstat(fd).st_size
            if held < size:
                os.posix_fallocate(fd, 0, -(-size // _RESERVE_MIN) * _RESERVE_MIN)
            self._reserved = os.fstat(fd).st_size
        except OSError:
            self._reserved = 0  # no room for it now; tried again on the next write
        finally:
            os.close(fd)

    def _give_up_reserve(self) -> bool:
        try:
            os.unlink(self.reserve_path)
        except OSError:
            return False
        self._reserved = 0
        return True

    def cleanup_temp(self) -> int:
        """Remove temp files left by writers that died (not ours, not live); returns count."""
        return sweep_dead_temps(self.path)
