"""The on-disk layout of a hub store, and its atomic writes.

::

    <root>/models/<id>/model.json (org/name: org--name)                    name, task, languages, default_version
    <root>/models/<id>/<version>/manifest.json        the VersionManifest
    <root>/models/<id>/<version>/files/<path>         the files themselves
    <root>/catalog.stamp                              rewritten by every publish
    <root>/usage.sqlite3                              usage counts (WAL)

Owns path arithmetic (always through checked names); its writes go through
:func:`accel.durable.atomic_write_bytes` (temp -> fsync -> rename -> fsync(dir)),
re-exported here for publish. Never serves or hashes anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from accel.durable import atomic_write_bytes, fsync_dir
from accel.modelid import model_dir_name
from accel.serving.paths import check_name, check_relpath

__all__ = ["ModelMeta", "Store", "atomic_write_bytes", "fsync_dir"]


class ModelMeta(BaseModel):
    """``<root>/models/<id>/model.json``: what a model is, independent of its versions."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    task: str | None = None
    languages: list[str] = Field(default_factory=list)
    default_version: str | None = None


@dataclass(frozen=True)
class Store:
    """Paths inside one hub store root. Every id, version and file path is checked."""

    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def stamp_path(self) -> Path:
        return self.root / "catalog.stamp"

    @property
    def usage_db(self) -> Path:
        return self.root / "usage.sqlite3"

    def model_dir(self, model_id: str) -> Path:
        return self.models_dir / model_dir_name(model_id)  # org/name -> org--name

    def model_json(self, model_id: str) -> Path:
        return self.model_dir(model_id) / "model.json"

    def version_dir(self, model_id: str, version: str) -> Path:
        return self.model_dir(model_id) / check_name(version, what="version")

    def manifest_path(self, model_id: str, version: str) -> Path:
        return self.version_dir(model_id, version) / "manifest.json"

    def files_dir(self, model_id: str, version: str) -> Path:
        return self.version_dir(model_id, version) / "files"

    def file_path(self, model_id: str, version: str, relpath: str) -> Path:
        return self.files_dir(model_id, version).joinpath(*check_relpath(relpath))

    def touch_stamp(self) -> None:
        """Tell running hubs that the catalog changed (they compare this file's mtime)."""
        atomic_write_bytes(self.stamp_path, str(time.time_ns()).encode())
