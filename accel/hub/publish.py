"""Publishing: hash a file or a directory and copy it into the store as one version.

Owns ``publish()``: each file is read once, hashed (SHA256 and blake3 per block) and
copied in the same pass into a private staging directory; ``manifest.json`` is written
there, and the whole version then appears with one ``rename`` (so a hub never sees a
half-published version). ``model.json`` and the catalog stamp are rewritten atomically.
Versions are immutable: the same content again is a no-op, other content is refused.
Never serves anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import blake3
import portalocker

from accel.errors import PublishConflictError, UsageError
from accel.hub.store import ModelMeta, Store, atomic_write_bytes, fsync_dir
from accel.modelid import check_model_id
from accel.schema import ChunkDigests, ManifestFile, VersionManifest, version_checksum
from accel.serving.paths import check_name, check_relpath

__all__ = ["DEFAULT_BLOCK_SIZE", "hash_file", "publish"]

DEFAULT_BLOCK_SIZE = 16 * 1024 * 1024
_READ = 1024 * 1024


@dataclass(frozen=True)
class _Source:
    relpath: str
    path: Path


def _sources(src: Path) -> list[_Source]:
    if src.is_file():
        check_relpath(src.name)
        return [_Source(src.name, src)]
    if not src.is_dir():
        raise UsageError(f"nothing to publish at {src}", hint="give a file or a directory")
    out: list[_Source] = []
    for path in sorted(src.rglob("*")):
        if path.is_file():
            rel = path.relative_to(src).as_posix()
            check_relpath(rel)
            out.append(_Source(rel, path))
    if not out:
        raise UsageError(f"directory {src} has no files to publish")
    return out


def hash_file(
    path: Path, block_size: int = DEFAULT_BLOCK_SIZE, *, copy_to: Path | None = None
) -> tuple[int, str, list[str]]:
    """Size, SHA256 and blake3 block digests of a file, optionally copying it on the way.

    One read pass: each buffer feeds the SHA256, the current block's blake3 and (when
    ``copy_to`` is given) the copy, which is fsynced before returning.
    """
    if block_size <= 0:
        raise UsageError(f"block size must be positive, got {block_size}")
    sha = hashlib.sha256()
    digests: list[str] = []
    block = blake3.blake3()
    in_block = 0
    size = 0
    buf = bytearray(min(_READ, block_size))
    view = memoryview(buf)
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(open(path, "rb"))
        out = stack.enter_context(open(copy_to, "wb")) if copy_to is not None else None
        # Never read across a block boundary, so each buffer belongs to one block.
        while n := f.readinto(view[: min(len(buf), block_size - in_block)]):
            chunk = view[:n]
            sha.update(chunk)
            block.update(chunk)
            if out is not None:
                out.write(chunk)
            size += n
            in_block += n
            if in_block == block_size:
                digests.append(block.hexdigest())
                block = blake3.blake3()
                in_block = 0
        if in_block:  # an empty file has no blocks: ceil(0 / block_size) == 0
            digests.append(block.hexdigest())
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    return size, sha.hexdigest(), digests


def _manifest(
    model_id: str, version: str, files: Iterable[ManifestFile], updated_at: str
) -> VersionManifest:
    listed = sorted(files, key=lambda f: f.path)
    return VersionManifest(
        model_id=model_id,
        version=version,
        size_bytes=sum(f.size_bytes for f in listed),
        files=listed,
        checksum_sha256=version_checksum(listed),
        updated_at=updated_at,
    )


def _entry(rel: str, size: int, sha: str, digests: list[str], block_size: int) -> ManifestFile:
    return ManifestFile(
        path=rel,
        size_bytes=size,
        sha256=sha,
        chunks=ChunkDigests(size=block_size, digests=digests),
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_manifest(path: Path) -> VersionManifest:
    return VersionManifest.model_validate_json(path.read_bytes())


def _conflict(model_id: str, version: str) -> PublishConflictError:
    return PublishConflictError(
        f"{model_id}@{version} is already published with different content",
        model_id=model_id,
        version=version,
    )


def publish(
    src: Path,
    root: Path,
    model_id: str,
    version: str,
    *,
    name: str | None = None,
    task: str | None = None,
    languages: Sequence[str] = (),
    default: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    mirrors: Sequence[str] | None = None,
) -> VersionManifest:
    """Publish ``src`` (a file, or a directory whose subfolders are kept) as ``model_id@version``.

    Returns the version's manifest. Re-publishing identical content is a no-op (metadata
    given again is still applied); different content for an existing version raises
    :class:`PublishConflictError`. ``default=True`` (or a model with no default yet) makes
    this version the model's ``default_version``. ``name``/``task``/``languages`` update
    ``model.json`` when given. ``mirrors`` (base URLs) go into the manifest; given on a
    re-publish of the same content, they replace the version's list (mirrors are not
    content: the version's checksum stays).
    """
    check_model_id(model_id)
    check_name(version, what="version")
    store = Store(Path(root))
    sources = _sources(Path(src))
    model_dir = store.model_dir(model_id)
    model_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = store.manifest_path(model_id, version)

    if manifest_path.exists():
        manifest = _same_or_conflict(manifest_path, sources, model_id, version, block_size)
        if mirrors is not None and list(mirrors) != manifest.mirrors:
            manifest = manifest.model_copy(update={"mirrors": list(mirrors)})
            atomic_write_bytes(manifest_path, manifest.model_dump_json(indent=1).encode())
    else:
        manifest = _stage_and_rename(
            store, sources, model_id, version, block_size, list(mirrors or ())
        )

    # model.json is read-modify-write: publishers of two versions at once take turns.
    with portalocker.Lock(str(model_dir / ".model.lock"), timeout=60):
        _write_model_meta(store, model_id, version, name, task, languages, default)
    store.touch_stamp()
    return manifest


def _same_or_conflict(
    manifest_path: Path, sources: list[_Source], model_id: str, version: str, block_size: int
) -> VersionManifest:
    existing = _read_manifest(manifest_path)
    have = {f.path: f for f in existing.files}
    if set(have) != {s.relpath for s in sources}:
        raise _conflict(model_id, version)
    for s in sources:
        known = have[s.relpath]
        if s.path.stat().st_size != known.size_bytes:
            raise _conflict(model_id, version)
        _, sha, _ = hash_file(s.path, known.chunks.size if known.chunks else block_size)
        if sha != known.sha256:
            raise _conflict(model_id, version)
    return existing


def _stage_and_rename(
    store: Store,
    sources: list[_Source],
    model_id: str,
    version: str,
    block_size: int,
    mirrors: list[str],
) -> VersionManifest:
    model_dir = store.model_dir(model_id)
    staging = model_dir / f".staging-{version}-{secrets.token_hex(4)}"
    try:
        files_dir = staging / "files"
        entries = []
        for s in sources:
            target = files_dir.joinpath(*check_relpath(s.relpath))
            target.parent.mkdir(parents=True, exist_ok=True)
            size, sha, digests = hash_file(s.path, block_size, copy_to=target)
            entries.append(_entry(s.relpath, size, sha, digests, block_size))
        manifest = _manifest(model_id, version, entries, _now())
        manifest.mirrors = mirrors
        atomic_write_bytes(staging / "manifest.json", manifest.model_dump_json(indent=1).encode())
        for d in sorted({p.parent for p in files_dir.rglob("*")}, reverse=True):
            fsync_dir(d)
        try:
            os.rename(staging, store.version_dir(model_id, version))
        except OSError:
            # Someone published the same version meanwhile: same content is fine.
            other = _read_manifest(store.manifest_path(model_id, version))
            if other.checksum_sha256 != manifest.checksum_sha256:
                raise _conflict(model_id, version) from None
            return other
        fsync_dir(model_dir)
        return manifest
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_model_meta(
    store: Store,
    model_id: str,
    version: str,
    name: str | None,
    task: str | None,
    languages: Sequence[str],
    default: bool,
) -> None:
    path = store.model_json(model_id)
    if path.exists():
        meta = ModelMeta.model_validate_json(path.read_bytes())
    else:
        meta = ModelMeta(id=model_id, name=name or model_id)
    if name is not None:
        meta.name = name
    if task is not None:
        meta.task = task
    if languages:
        meta.languages = list(languages)
    if default or meta.default_version is None:
        meta.default_version = version
    atomic_write_bytes(path, meta.model_dump_json(indent=1).encode())
