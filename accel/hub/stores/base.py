"""The one interface between the hub and where its models live.

A store holds models (``model.json``), their versions (``manifest.json``, the commit
point of a version) and the files; the hub's catalog, its ``/storage`` route, ``accel
publish`` and ``accel gc`` talk to a store only through :class:`ModelStore`. Two
implementations: :class:`~accel.hub.stores.directory.DirectoryStore` (the embedded
default, a local directory) and :class:`~accel.hub.stores.s3.S3Store` (an S3-compatible
bucket). Never imports aiohttp handlers nor boto3.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from accel.hub.store import ModelMeta
from accel.schema import VersionManifest

if TYPE_CHECKING:
    from aiohttp import web

    from accel.hub.catalog import Catalog

__all__ = ["GcReport", "ModelStore", "PublishRequest", "Sender", "StoredModel"]


@dataclass(frozen=True)
class StoredModel:
    """One model as a store holds it: its metadata and its committed versions."""

    model_id: str
    meta: ModelMeta
    manifests: list[VersionManifest]


@dataclass(frozen=True)
class PublishRequest:
    """What ``accel publish`` asks of a store (see :func:`accel.hub.publish.publish`)."""

    src: Path
    model_id: str
    version: str
    name: str | None = None
    task: str | None = None
    languages: Sequence[str] = ()
    default: bool = False
    block_size: int = 16 * 1024 * 1024
    progress: Callable[[str], None] | None = None  # one line per file uploaded or skipped
    #: the version's mirror base URLs (``VersionManifest.mirrors``); given again on a
    #: re-publish of the same content, they replace the old list
    mirrors: Sequence[str] | None = None


@dataclass
class GcReport:
    """What a garbage collection found (and, unless it was a dry run, removed)."""

    orphans: list[str] = field(default_factory=list)
    orphan_bytes: int = 0
    removed: bool = False


class Sender(Protocol):
    """The ``/storage/...`` handler of a store."""

    def handle(self, request: web.Request) -> Awaitable[web.StreamResponse]: ...

    def close(self) -> None: ...


class ModelStore(Protocol):
    """A hub store. ``signature()`` is cheap (called per request); ``load()`` may be slow."""

    @property
    def description(self) -> str:
        """What ``accel serve`` prints: a directory or an ``s3://`` URL."""
        ...

    @property
    def usage_db(self) -> Path:
        """Where this hub keeps its usage counts (SQLite)."""
        ...

    def prepare(self) -> None:
        """Check that the store can be used (raises a StoreError/ConfigError line if not)."""
        ...

    def signature(self) -> object:
        """A value that changes when a publish committed (cheap: no network per call)."""
        ...

    def load(self) -> list[StoredModel]:
        """Every model and committed version (skipping broken ones with a warning)."""
        ...

    def sender(self, catalog: Catalog) -> Sender:
        """The ``/storage`` handler over this store's files."""
        ...

    def publish(self, request: PublishRequest) -> VersionManifest:
        """Publish a version (immutable; the same content again is a no-op)."""
        ...

    def gc(self, *, dry_run: bool = True, min_age_s: float = 3600.0) -> GcReport:
        """Find (and unless ``dry_run``, remove) what no committed manifest references."""
        ...

    def close(self) -> None:
        """Stop background work (polling)."""
        ...
