"""Publishing into an S3 store: multipart uploads, hashes from the same read, the
manifest last.

Each file is read once: the bytes boto3's transfer manager reads (parts of
``part_size``, uploaded ``concurrency`` at a time) pass through :class:`HashingReader`,
which feeds the SHA256 and the blake3 block digests. When a file's upload completed, a
small receipt object records its size, hashes and ETag; ``manifest.json`` is written
only after every file has one, so it is the commit point: a crashed publish leaves
objects but no visible version (``accel gc`` removes them), and a rerun skips every
file whose receipt, local content and object still agree (the file is hashed again,
not uploaded again). ``model.json`` and ``catalog.stamp`` are written after the
manifest. Versions are immutable: another content for a committed version is refused.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import blake3
from pydantic import BaseModel, ValidationError

from accel.errors import StoreError
from accel.hub.publish import _conflict, _entry, _manifest, _now, _Source, _sources, hash_file
from accel.hub.store import ModelMeta
from accel.hub.stores.base import PublishRequest
from accel.modelid import check_model_id
from accel.schema import ManifestFile, VersionManifest
from accel.serving.paths import check_name, check_relpath
from accel.units import format_bytes

if TYPE_CHECKING:
    from accel.hub.stores.s3 import S3Store

__all__ = ["HashingReader", "publish_to_s3"]

PART_SIZE = 16 * 1024 * 1024
CONCURRENCY = 8


class Receipt(BaseModel):
    """``.receipts/<path>``: a file of a version being published is in the bucket."""

    path: str
    size_bytes: int
    sha256: str
    block_size: int
    digests: list[str]
    etag: str


class HashingReader:
    """A read-only, non-seekable view of a file that hashes what is read through it.

    Non-seekable on purpose: boto3's transfer manager then reads the file sequentially
    (one pass) and uploads the parts it buffered in parallel.
    """

    def __init__(self, f: Any, block_size: int) -> None:
        self._f = f
        self._block_size = block_size
        self.sha = hashlib.sha256()
        self.size = 0
        self.digests: list[str] = []
        self._block = blake3.blake3()
        self._in_block = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._f.read(n)
        if data:
            self._feed(data)
        return data

    def _feed(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            take = min(len(view), self._block_size - self._in_block)
            self._block.update(view[:take])
            self._in_block += take
            view = view[take:]
            if self._in_block == self._block_size:
                self.digests.append(self._block.hexdigest())
                self._block = blake3.blake3()
                self._in_block = 0

    def finish(self) -> tuple[int, str, list[str]]:
        if self._in_block:
            self.digests.append(self._block.hexdigest())
            self._in_block = 0
        return self.size, self.sha.hexdigest(), self.digests


def publish_to_s3(store: S3Store, req: PublishRequest) -> VersionManifest:
    """Publish ``req.src`` as ``req.model_id@req.version`` into ``store`` (see module doc)."""
    check_model_id(req.model_id)
    check_name(req.version, what="version")
    sources = _sources(req.src)
    store.check()
    say = req.progress or (lambda line: None)
    manifest_key = store.version_key(req.model_id, req.version, "manifest.json")
    existing = store.get_bytes(manifest_key)
    if existing is not None:
        manifest = _same_or_conflict(existing, sources, req)
        say(f"{req.model_id}@{req.version} is already published with this content")
        if req.mirrors is not None and list(req.mirrors) != manifest.mirrors:
            manifest = manifest.model_copy(update={"mirrors": list(req.mirrors)})
            store.put_bytes(manifest_key, manifest.model_dump_json(indent=1).encode())
    else:
        entries = [_upload_one(store, req, s, say) for s in sources]
        manifest = _manifest(req.model_id, req.version, entries, _now())
        manifest.mirrors = list(req.mirrors or ())
        raced = store.get_bytes(manifest_key)
        if raced is not None:  # another publisher committed meanwhile: same content is fine
            other = VersionManifest.model_validate_json(raced)
            if other.checksum_sha256 != manifest.checksum_sha256:
                raise _conflict(req.model_id, req.version)
            manifest = other
        else:
            store.put_bytes(manifest_key, manifest.model_dump_json(indent=1).encode())
    _write_model_meta(store, req)
    store.put_bytes(store.key("catalog.stamp"), _now().encode() + b" " + manifest_key.encode())
    _drop_receipts(store, req)
    return manifest


def _receipt_key(store: S3Store, req: PublishRequest, relpath: str) -> str:
    return store.version_key(req.model_id, req.version, ".receipts", *check_relpath(relpath))


def _upload_one(store: S3Store, req: PublishRequest, s: _Source, say: Any) -> ManifestFile:
    from boto3.s3.transfer import TransferConfig

    key = store.file_key(req.model_id, req.version, s.relpath)
    done = _usable_receipt(store, req, s, key)
    if done is not None:
        say(f"{s.relpath}: already uploaded ({format_bytes(done.size_bytes)}), skipped")
        return _entry(s.relpath, done.size_bytes, done.sha256, done.digests, req.block_size)
    config = TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=CONCURRENCY,
        use_threads=True,
    )
    with open(s.path, "rb") as f:
        reader = HashingReader(f, req.block_size)
        try:
            store.client.upload_fileobj(reader, store.location.bucket, key, Config=config)
        except Exception as exc:
            from accel.hub.stores.s3client import translate

            raise translate(exc, store.location, store.endpoint) from exc
    size, sha, digests = reader.finish()
    head = store.call("head_object", Key=key)
    if int(head["ContentLength"]) != size:
        raise StoreError(f"{key}: the store holds {head['ContentLength']} bytes, sent {size}")
    receipt = Receipt(
        path=s.relpath,
        size_bytes=size,
        sha256=sha,
        block_size=req.block_size,
        digests=digests,
        etag=str(head.get("ETag", "")),
    )
    store.put_bytes(_receipt_key(store, req, s.relpath), receipt.model_dump_json().encode())
    say(f"{s.relpath}: uploaded {format_bytes(size)}")
    return _entry(s.relpath, size, sha, digests, req.block_size)


def _usable_receipt(store: S3Store, req: PublishRequest, s: _Source, key: str) -> Receipt | None:
    """The receipt of an earlier run, if the local file and the object still match it."""
    raw = store.get_bytes(_receipt_key(store, req, s.relpath))
    if raw is None:
        return None
    try:
        receipt = Receipt.model_validate_json(raw)
    except (ValueError, ValidationError):
        return None
    if receipt.block_size != req.block_size or receipt.size_bytes != s.path.stat().st_size:
        return None
    try:
        head = store.call("head_object", Key=key)
    except StoreError:
        return None
    if int(head["ContentLength"]) != receipt.size_bytes or head.get("ETag") != receipt.etag:
        return None
    _, sha, _ = hash_file(s.path, req.block_size)
    return receipt if sha == receipt.sha256 else None


def _same_or_conflict(raw: bytes, sources: list[_Source], req: PublishRequest) -> VersionManifest:
    existing = VersionManifest.model_validate_json(raw)
    have = {f.path: f for f in existing.files}
    if set(have) != {s.relpath for s in sources}:
        raise _conflict(req.model_id, req.version)
    for s in sources:
        known = have[s.relpath]
        if s.path.stat().st_size != known.size_bytes:
            raise _conflict(req.model_id, req.version)
        _, sha, _ = hash_file(s.path, known.chunks.size if known.chunks else req.block_size)
        if sha != known.sha256:
            raise _conflict(req.model_id, req.version)
    return existing


def _write_model_meta(store: S3Store, req: PublishRequest) -> None:
    # Read-modify-write without a lock: S3 has none. Two publishers of one model's
    # metadata at once may lose one's name/task update (never a version: manifests are
    # separate objects, and the catalog lists versions, not model.json).
    key = store.model_key(req.model_id, "model.json")
    raw = store.get_bytes(key)
    meta = (
        ModelMeta.model_validate_json(raw)
        if raw is not None
        else ModelMeta(id=req.model_id, name=req.name or req.model_id)
    )
    if req.name is not None:
        meta.name = req.name
    if req.task is not None:
        meta.task = req.task
    if req.languages:
        meta.languages = list(req.languages)
    if req.default or meta.default_version is None:
        meta.default_version = req.version
    store.put_bytes(key, meta.model_dump_json(indent=1).encode())


def _drop_receipts(store: S3Store, req: PublishRequest) -> None:
    prefix = store.version_key(req.model_id, req.version, ".receipts") + "/"
    try:
        keys = [{"Key": o["Key"]} for o in store.list_all(prefix)]
        for i in range(0, len(keys), 1000):
            store.call("delete_objects", Delete={"Objects": keys[i : i + 1000], "Quiet": True})
    except StoreError:
        pass  # leftovers are harmless: accel gc removes them
