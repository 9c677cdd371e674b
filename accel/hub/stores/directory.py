"""The directory store: the embedded default, a local directory laid out as in
:mod:`accel.hub.store`.

Owns noticing changes cheaply (the ``catalog.stamp`` mtime, one ``stat`` per request,
and the models directory's mtime once a second) and reading models and manifests from
disk. Files are served by :class:`accel.hub.storage.StorageSender` (sendfile).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from accel.errors import ConfigError, UnsafePathError
from accel.hub.store import ModelMeta, Store
from accel.hub.stores.base import GcReport, PublishRequest, Sender, StoredModel
from accel.modelid import model_id_from_dir
from accel.schema import VersionManifest
from accel.serving.paths import check_name

if TYPE_CHECKING:
    from accel.hub.catalog import Catalog

__all__ = ["DirectoryStore"]

log = logging.getLogger("accel.hub")


class DirectoryStore:
    """A hub store in a local directory (``--root DIR``)."""

    def __init__(self, root: Path) -> None:
        self.layout = Store(Path(root))
        self._stamp = str(self.layout.stamp_path)
        self._models = str(self.layout.models_dir)
        self._models_checked = -1e9
        self._models_mtime = 0

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def description(self) -> str:
        return str(self.layout.root)

    @property
    def usage_db(self) -> Path:
        return self.layout.usage_db

    def prepare(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--root {self.root} is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)

    def signature(self) -> tuple[int, int]:
        try:
            stamp = os.stat(self._stamp).st_mtime_ns
        except OSError:
            stamp = 0
        now = time.monotonic()
        # The models dir only changes when a model is added or removed by hand (publish
        # always rewrites the stamp), so it is looked at once a second, not per request.
        if now - self._models_checked >= 1.0:
            self._models_checked = now
            try:
                self._models_mtime = os.stat(self._models).st_mtime_ns
            except OSError:
                self._models_mtime = 0
        return stamp, self._models_mtime

    def load(self) -> list[StoredModel]:
        out: list[StoredModel] = []
        try:
            model_dirs = sorted(self.layout.models_dir.iterdir())
        except OSError:
            return out
        for model_dir in model_dirs:
            try:
                model_id = model_id_from_dir(model_dir.name)  # org--name -> org/name
                meta = ModelMeta.model_validate_json((model_dir / "model.json").read_bytes())
            except (OSError, ValueError, ValidationError, UnsafePathError) as exc:
                if not model_dir.name.startswith("."):
                    log.warning("skipping %s: %s", model_dir.name, exc)
                continue
            versions: list[VersionManifest] = []
            for vdir in model_dir.iterdir():
                if vdir.name.startswith(".") or not vdir.is_dir():
                    continue
                try:
                    check_name(vdir.name, what="version")
                    manifest = VersionManifest.model_validate_json(
                        (vdir / "manifest.json").read_bytes()
                    )
                except (OSError, ValueError, ValidationError, UnsafePathError) as exc:
                    log.warning("skipping %s/%s: %s", model_dir.name, vdir.name, exc)
                    continue
                versions.append(manifest)
            out.append(StoredModel(model_id, meta, versions))
        return out

    def sender(self, catalog: Catalog) -> Sender:
        from accel.hub.storage import StorageSender

        return StorageSender(catalog)

    def publish(self, request: PublishRequest) -> VersionManifest:
        from accel.hub.publish import publish

        return publish(
            request.src,
            self.root,
            request.model_id,
            request.version,
            name=request.name,
            task=request.task,
            languages=request.languages,
            default=request.default,
            block_size=request.block_size,
            mirrors=request.mirrors,
        )

    def gc(self, *, dry_run: bool = True, min_age_s: float = 3600.0) -> GcReport:
        """Staging directories left by crashed publishes (older than ``min_age_s``)."""
        report = GcReport()
        cutoff = time.time() - min_age_s
        for staging in sorted(self.layout.models_dir.glob("*/.staging-*")):
            try:
                if staging.stat().st_mtime > cutoff:
                    continue  # maybe a publish still running
                size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
            except OSError:
                continue
            report.orphans.append(str(staging.relative_to(self.root)))
            report.orphan_bytes += size
            if not dry_run:
                shutil.rmtree(staging, ignore_errors=True)
        report.removed = not dry_run
        return report

    def close(self) -> None:
        pass
