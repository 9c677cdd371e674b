"""The manifest each installed (or installing) version was installed from, kept on disk.

Owns ``<models_dir>/.accel/manifests/<id>@<version>.json`` (``/`` of an org id written
``--``, as the staging dirs are): the :class:`~accel.schema.VersionManifest` whose files
a version's directory holds, blake3 block size and digests included. The registry
records each file's size and sha256; this keeps what the registry does not, so that a
node's peer server can say which blocks of a file it holds (and serve them) for a ready
version and for one still downloading, without asking the hub again.

Written once an install knows its manifest (an in-place install before its first byte;
a staged update when it swaps in, so the ready version's record always describes the
bytes in its directory), removed with the version. A reader checks the manifest's
``checksum_sha256`` against the registry record before trusting it. Never downloads,
never takes locks (atomic writes: a reader sees the old file or the new one).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import ValidationError

from accel.manager.fsutil import atomic_write_bytes
from accel.schema import VersionManifest

__all__ = ["ManifestStore"]


class ManifestStore:
    """The kept manifests of one models dir (``state_dir`` is its ``.accel``)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "manifests"

    def path(self, model_id: str, version: str) -> Path:
        """Where the manifest of ``model_id`` ``version`` is kept."""
        return self.dir / f"{model_id.replace('/', '--')}@{version}.json"

    def save(self, manifest: VersionManifest) -> None:
        """Keep ``manifest`` (atomically: temp, fsync, rename), replacing an older one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = manifest.model_dump_json().encode()
        atomic_write_bytes(self.path(manifest.model_id, manifest.version), data)

    def load(self, model_id: str, version: str) -> VersionManifest | None:
        """The kept manifest, or None when there is none or it does not parse."""
        try:
            raw = self.path(model_id, version).read_bytes()
        except OSError:
            return None
        try:
            return VersionManifest.model_validate_json(raw)
        except ValidationError:
            return None

    def drop(self, model_id: str, version: str) -> None:
        """Forget the manifest of a removed version."""
        with contextlib.suppress(OSError):
            self.path(model_id, version).unlink()
