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
    "AnnounceAnswer",
    "ChunkDigests",
    "ErrorBody",
    "ErrorDetail",
    "FileEntry",
    "FileError",
    "FileStatus",
    "InstallRecord",
    "Job",
    "LockRecord",
    "ManifestFile",
    "ModelInfo",
    "ModelNotAvailableMessage",
    "PeerAnnounce",
    "PeerEntry",
    "PeerHolding",
    "PeerList",
    "RankingEntry",
    "Registry",
    "UsageReport",
    "VersionInfo",
    "VersionManifest",
    "version_checksum",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=False)


#: the largest size a file can have (``off_t``); a hub answer above it is malformed
MAX_FILE_BYTES = 2**63 - 1


class FileEntry(_Model):
    """One file of a version as listed in the catalog."""

    path: str
    size_bytes: int = Field(ge=0, le=MAX_FILE_BYTES)
    sha256: str


class VersionInfo(_Model):
    """One version of a model as listed in the catalog."""

    version: str
    size_bytes: int = Field(ge=0, le=MAX_FILE_BYTES)
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
    size: int = Field(gt=0, le=MAX_FILE_BYTES)
    digests: list[str]


class ManifestFile(FileEntry):
    """A file in a version manifest: its catalog entry plus block digests.

    ``chunks`` is None only for a version from a Hugging Face endpoint (which has no
    block digests): the whole-file sha256 is then all there is to check.
    """

    chunks: ChunkDigests | None = None


class VersionManifest(_Model):
    """``GET /api/models/{id}/versions/{version}/manifest``."""

    model_id: str
    version: str
    size_bytes: int = Field(ge=0, le=MAX_FILE_BYTES)
    files: list[ManifestFile]
    checksum_sha256: str
    updated_at: str
    #: base URLs of mirrors holding this version's files: a file's URL at a mirror is
    #: ``{base}/{path}`` (path percent-encoded per segment). Not content: the files'
    #: sizes and digests are what every source is held to, and ``checksum_sha256``
    #: does not cover this list
    mirrors: list[str] = Field(default_factory=list)


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


# --- Node-side records (the models dir, accel/manager/) --------------------------------
# registry.json and the lock records are read by other processes (and other versions of
# accel), so they carry a schema version and are validated on every read.

REGISTRY_SCHEMA_VERSION = 1

InstallState = Literal["queued", "downloading", "verifying", "ready", "paused", "error"]
FileState = Literal["pending", "downloading", "done", "error"]


class FileError(_Model):
    """Why one file of a version failed: a stable code and a human message."""

    code: str
    message: str


class FileStatus(_Model):
    """One file of an installed (or installing) version, as the registry records it."""

    path: str
    bytes_total: int = Field(ge=0)
    sha256: str
    state: FileState = "pending"
    bytes_done: int = Field(default=0, ge=0)
    error: FileError | None = None


class InstallRecord(_Model):
    """One model version in ``registry.json``: its state, files, sizes and last error.

    ``owner_pid``/``owner_start`` name the process driving the install, so a reader can
    tell a live ``downloading`` from one whose process died (shown as ``paused``).
    """

    model_id: str
    version: str
    state: InstallState
    path: str
    bytes_total: int = Field(ge=0)
    bytes_done: int = Field(default=0, ge=0)
    checksum_sha256: str = ""
    priority: int = 0
    files: list[FileStatus] = Field(default_factory=list)
    error: FileError | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    installed_at: float | None = None
    owner_pid: int | None = None
    owner_start: float | None = None
    #: a staged update only: the staging directory's inode, recorded just before it is
    #: swapped into place, so a rerun after a crash can tell whether the swap happened
    swap_ino: int | None = None
    #: an ``hf://`` install only: ``hf://REPO`` (the version is the commit sha), the
    #: revision names asked that resolved to it (its aliases: ``main`` moving on is seen
    #: by ``update``) and the endpoint it came from
    source: str | None = None
    revisions: list[str] = Field(default_factory=list)
    source_endpoint: str | None = None
    #: in ``status()`` answers only: the update running beside this ready version
    update: UpdateStatus | None = None


class UpdateStatus(_Model):
    """An update of a ready version, staged beside it (the ready one stays usable)."""

    state: InstallState
    checksum_sha256: str
    bytes_total: int = Field(ge=0)
    bytes_done: int = Field(default=0, ge=0)
    error: FileError | None = None


class Registry(_Model):
    """``<models_dir>/registry.json``: every installed or partial version, keyed ``id@version``.

    ``updates`` holds, under the same keys, staged updates of ready versions whose
    content changed on the hub (added in place of a schema bump: older readers keep
    unknown fields, and read ``installs`` as before).
    """

    schema_version: int = REGISTRY_SCHEMA_VERSION
    installs: dict[str, InstallRecord] = Field(default_factory=dict)
    updates: dict[str, InstallRecord] = Field(default_factory=dict)


class LockRecord(_Model):
    """The JSON record next to a lock file: who holds it and whether it is still alive."""

    kind: Literal["task", "file"] = "task"
    pid: int
    hostname: str
    process_start_time: float
    model_id: str
    version: str
    file: str | None = None
    created_at: float
    heartbeat_at: float
    timeout_s: float = Field(gt=0)


#: a node id as a node announces it: one short token of letters, digits and ``._:-``
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class PeerHolding(_Model):
    """One version a node holds, and how much of it (0..1 by bytes; 1 = whole, verified)."""

    model_config = ConfigDict(extra="ignore")
    model_id: str = Field(max_length=300)
    version: str = Field(max_length=128)
    complete: float = Field(ge=0, le=1, strict=True)  # a number, not true/false


class PeerAnnounce(_Model):
    """Body of ``POST /api/peers/announce``: a node's heartbeat to the tracker. Each one
    replaces the node's last; ``versions`` empty means it holds nothing (or leaves)."""

    model_config = ConfigDict(extra="ignore")
    node_id: str = Field(pattern=NODE_ID_PATTERN)
    url: str = Field(pattern=r"^https?://[!-~]+$", max_length=2048)  # printable ASCII
    zone: str = Field(default="", max_length=64)
    versions: list[PeerHolding] = Field(default_factory=list, max_length=1000)


class AnnounceAnswer(_Model):
    """The tracker's answer to an announce: listed for ``ttl`` s, announce every
    ``interval`` s."""

    ttl: float
    interval: float


class PeerEntry(_Model):
    """One peer in ``GET /api/models/{id}/versions/{v}/peers``."""

    node_id: str
    url: str
    zone: str
    complete: float


class PeerList(_Model):
    """``GET /api/models/{id}/versions/{v}/peers``: up to K live peers, same zone first."""

    peers: list[PeerEntry]
    ttl: float
