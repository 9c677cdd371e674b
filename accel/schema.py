"""Typed values that cross the wire or the disk.

Owns the pydantic models of the hub API (the seed's shapes, field for field), the
per-version manifest with its chunk digests, and the error body. Node-side records
(registry, lock records, checkpoint, scheduler messages) live here too as they land.
Never does I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChunkDigests",
    "ErrorBody",
    "ErrorDetail",
    "FileEntry",
    "Job",
    "ManifestFile",
    "ModelInfo",
    "ModelNotAvailableMessage",
    "RankingEntry",
    "UsageReport",
    "VersionInfo",
    "VersionManifest",
    "version_checksum",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=False)


class FileEntry(_Model):
    """One file of a version as listed in the catalog."""

    path: str
    size_bytes: int = Field(ge=0)
    sha256: str


class VersionInfo(_Model):
    """One version of a model as listed in the catalog."""

    version: str
    size_bytes: int = Field(ge=0)
    files: list[FileEntry]
    checksum_sha256: str
    updated_at: str


class ModelInfo(_Model):
    """One model of ``GET /api/models``."""

    id: str
    name: str
    versions: list[VersionInfo]
    default_version: str | None
    task: str | None = None
    languages: list[str] = Field(default_factory=list)


class ChunkDigests(_Model):
    """The blake3 digests of a file's fixed-size blocks (the last may be shorter)."""

    algo: Literal["blake3"] = "blake3"
    size: int = Field(gt=0)
    digests: list[str]


class ManifestFile(FileEntry):
    """A file in a version manifest: its catalog entry plus block digests."""

    chunks: ChunkDigests


class VersionManifest(_Model):
    """``GET /api/models/{id}/versions/{version}/manifest``."""

    model_id: str
    version: str
    size_bytes: int = Field(ge=0)
    files: list[ManifestFile]
    checksum_sha256: str
    updated_at: str


class RankingEntry(_Model):
    """One row of ``GET /api/model-usage/ranking``."""

    model_id: str
    request_count: int = Field(ge=0)
    rank: int = Field(ge=1)


class UsageReport(_Model):
    """Body of ``POST /api/model-usage``."""

    model_config = ConfigDict(extra="ignore")
    model_id: str


class ErrorDetail(_Model):
    code: str
    message: str
    status: int


class ErrorBody(_Model):
    """Every error answer of the hub: ``{"error": {"code", "message", "status"}}``."""

    error: ErrorDetail


def version_checksum(files: list[FileEntry] | list[ManifestFile]) -> str:
    """SHA256 over the sorted lines ``path\\0size\\0sha256\\n`` of a version's files."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.size_bytes}\0{f.sha256}\n".encode())
    return h.hexdigest()


# --- Scheduler messages (node integration, accel/node/) -------------------------------
# The scheduler team reads these as JSON schemas: accel/node/schemas/*.schema.json,
# generated from the models below and held equal to them by tests/node/test_messages.py.

NotAvailableReason = Literal[
    "not_installed", "queued", "downloading", "paused", "verifying", "error"
]


class Job(_Model):
    """A job as the scheduler assigns it to a node: the guard checks its model first."""

    job_id: str = Field(min_length=1)
    required_model_id: str = Field(min_length=1)
    required_model_version: str | None = Field(
        default=None, description="None means the hub's default_version"
    )


class ModelNotAvailableMessage(_Model):
    """Sent by a node to the scheduler when it cannot run a job: its model is not ready.

    ``progress`` is the fraction (0..1) of the version's bytes already on the node, so a
    scheduler can prefer to wait for a node that is at 0.9 over one at 0. ``message_id``
    is unique per report and stays the same across delivery retries, so a scheduler can
    drop duplicates.
    """

    type: Literal["MODEL_NOT_AVAILABLE"] = "MODEL_NOT_AVAILABLE"
    job_id: str
    node_id: str
    model_id: str
    version: str | None
    reason: NotAvailableReason
    progress: float = Field(ge=0.0, le=1.0)
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    install_queued: bool = Field(
        default=False, description="true when the node queued the install for this job"
    )
    detail: str | None = Field(default=None, description="human-readable explanation")
