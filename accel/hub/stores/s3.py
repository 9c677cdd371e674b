"""The S3 store: a hub's models in an S3-compatible bucket (``s3://BUCKET[/PREFIX]``).

Object layout (the same as the directory store's, under PREFIX)::

    models/<id>/model.json                    name, task, languages, default_version
    models/<id>/<version>/manifest.json       the commit point of a version
    models/<id>/<version>/files/<path>        the files (multipart objects)
    models/<id>/<version>/.receipts/<path>    what a running publish already uploaded
    catalog.stamp                             rewritten by every publish

where ``<id>`` is the model id's one directory name, as in the directory store:
``org/name`` is ``org--name`` (:mod:`accel.modelid`), so a bucket and a directory tree
of the same models hold the same names, and listing ``models/`` one level deep finds
every model.

Owns keeping the catalog in memory without a listing per request: a thread polls the
stamp object every ``poll_s`` seconds and, when it changed, lists models and versions
(one delimiter listing per model) and fetches only the manifests it has not seen
(versions are immutable, so a manifest is fetched once per hub). Files are never read
by the hub: ``/storage`` answers with presigned URLs (:mod:`accel.hub.stores.s3_storage`).
Usage counts live in SQLite under ``state_dir``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from accel.errors import StoreError, UnsafePathError
from accel.hub.store import ModelMeta
from accel.hub.stores.base import GcReport, PublishRequest, Sender, StoredModel
from accel.hub.stores.s3client import S3Location, make_client, translate
from accel.modelid import model_dir_name, model_id_from_dir
from accel.schema import VersionManifest
from accel.serving.paths import check_name, check_relpath

if TYPE_CHECKING:
    from accel.hub.catalog import Catalog

__all__ = ["S3Store"]

log = logging.getLogger("accel.hub")

STORAGE_MODES = ("redirect", "proxy")


class S3Store:
    """A hub store in a bucket. Thread-safe: boto3 clients may be shared by threads."""

    def __init__(
        self,
        location: S3Location,
        *,
        endpoint: str | None = None,
        state_dir: Path | None = None,
        presign_ttl: int = 3600,
        storage_mode: str = "redirect",
        poll_s: float = 2.0,
    ) -> None:
        self.location = location
        self.endpoint = endpoint
        self.state_dir = state_dir
        self.presign_ttl = presign_ttl
        self.storage_mode = storage_mode
        self.poll_s = poll_s
        self._client: Any = None
        self._manifests: dict[tuple[str, str], VersionManifest] = {}
        self._models: list[StoredModel] = []
        self._sig: object = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- plumbing ------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = make_client(self.endpoint)
            except Exception as exc:
                raise translate(exc, self.location, self.endpoint) from exc
        return self._client

    def call(self, method: str, **kwargs: Any) -> Any:
        """One S3 call with the bucket filled in; botocore errors become StoreErrors."""
        try:
            return getattr(self.client, method)(Bucket=self.location.bucket, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            raise translate(exc, self.location, self.endpoint) from exc

    def key(self, *parts: str) -> str:
        return self.location.key(*parts)

    def model_key(self, model_id: str, *parts: str) -> str:
        """The key of ``parts`` under a model (``org/name`` -> ``models/org--name/...``)."""
        return self.key("models", model_dir_name(model_id), *parts)

    def version_key(self, model_id: str, version: str, *parts: str) -> str:
        """The key of ``parts`` under a version of a model."""
        return self.model_key(model_id, check_name(version, what="version"), *parts)

    def file_key(self, model_id: str, version: str, relpath: str) -> str:
        return self.version_key(model_id, version, "files", *check_relpath(relpath))

    def get_bytes(self, key: str) -> bytes | None:
        """An object's bytes, or None when there is no such key."""
        try:
            return bytes(self.call("get_object", Key=key)["Body"].read())
        except StoreError as exc:
            if _no_such_key(exc):
                return None
            raise

    def put_bytes(self, key: str, body: bytes) -> None:
        self.call("put_object", Key=key, Body=body, ContentType="application/json")

    def presign(self, key: str) -> str:
        """A presigned GET URL for ``key`` valid ``presign_ttl`` seconds (computed locally)."""
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.location.bucket, "Key": key},
            ExpiresIn=self.presign_ttl,
        )
        return url

    def list_prefixes(self, prefix: str) -> tuple[list[str], list[str]]:
        """(sub-prefixes, keys) directly under ``prefix`` (delimiter listing, paged)."""
        prefixes: list[str] = []
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.call("list_objects_v2", **kwargs)
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            keys += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return prefixes, keys

    def list_all(self, prefix: str) -> list[dict[str, Any]]:
        """Every object under ``prefix`` (key, size), paged."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.call("list_objects_v2", **kwargs)
            out += page.get("Contents", [])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return out

    # -- ModelStore ----------------------------------------------------------------------
    @property
    def description(self) -> str:
        return self.location.url

    @property
    def usage_db(self) -> Path:
        if self.state_dir is None:
            raise StoreError("an S3 store needs a state directory for its usage counts")
        return self.state_dir / "usage.sqlite3"

    def check(self) -> None:
        """The bucket exists and the credentials work (one HEAD)."""
        self.call("head_bucket")

    def prepare(self) -> None:
        self.check()
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self._poll_once()
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="accel-s3-poll", daemon=True)
            self._poller.start()

    def signature(self) -> object:
        return self._sig

    def load(self) -> list[StoredModel]:
        return self._models

    def sender(self, catalog: Catalog) -> Sender:
        from accel.hub.stores.s3_storage import ProxySender, RedirectSender

        if self.storage_mode == "proxy":
            return ProxySender(catalog, self)
        return RedirectSender(catalog, self)

    def publish(self, request: PublishRequest) -> VersionManifest:
        from accel.hub.stores.s3_publish import publish_to_s3

        return publish_to_s3(self, request)

    def gc(self, *, dry_run: bool = True, min_age_s: float = 3600.0) -> GcReport:
        """Objects under ``models/`` that no committed manifest (nor model.json) names.

        A version without a manifest is a crashed (or running) publish: its files and
        receipts are orphans. Objects younger than ``min_age_s`` are left alone, since
        a publish may still be uploading them.
        """
        self.check()
        keep: set[str] = {self.key("catalog.stamp")}
        for stored in self._scan():
            keep.add(self.model_key(stored.model_id, "model.json"))
            for m in stored.manifests:
                keep.add(self.version_key(stored.model_id, m.version, "manifest.json"))
                for f in m.files:
                    keep.add(self.file_key(stored.model_id, m.version, f.path))
        report = GcReport()
        cutoff = time.time() - min_age_s
        doomed: list[str] = []
        for obj in self.list_all(self.key("models/")):
            if obj["Key"] in keep:
                continue
            if obj["LastModified"].timestamp() > cutoff:
                continue
            report.orphans.append(obj["Key"])
            report.orphan_bytes += int(obj.get("Size", 0))
            doomed.append(obj["Key"])
        if not dry_run:
            for i in range(0, len(doomed), 1000):
                batch = [{"Key": k} for k in doomed[i : i + 1000]]
                self.call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            self._abort_stale_uploads(cutoff)
            report.removed = True
        return report

    def close(self) -> None:
        self._stop.set()

    # -- catalog loading -----------------------------------------------------------------
    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._poll_once()
            except Exception as exc:  # keep serving what we have; say why once per poll
                log.warning("catalog poll of %s failed: %s", self.location.url, exc)

    def _poll_once(self) -> None:
        stamp = self.get_bytes(self.key("catalog.stamp"))
        if stamp is not None and stamp == self._sig:
            return
        models = self._scan()
        self._models = models  # the list first: whoever sees the new stamp sees it too
        # No stamp (nothing published yet, or objects copied in by hand): listed again
        # every poll, and the catalog reloads only when what was listed changed.
        self._sig = stamp if stamp is not None else _listed(models)

    def _scan(self) -> list[StoredModel]:
        out: list[StoredModel] = []
        model_prefixes, _ = self.list_prefixes(self.key("models/"))
        for mp in sorted(model_prefixes):
            model_id = mp[len(self.key("models/")) :].rstrip("/")
            try:
                model_id = model_id_from_dir(model_id)  # org--name -> org/name
                raw = self.get_bytes(mp + "model.json")
                if raw is None:
                    continue  # a publish that crashed before model.json: nothing to show
                meta = ModelMeta.model_validate_json(raw)
            except (ValueError, ValidationError, UnsafePathError) as exc:
                log.warning("skipping %s: %s", model_id, exc)
                continue
            version_prefixes, _ = self.list_prefixes(mp)
            manifests: list[VersionManifest] = []
            for vp in version_prefixes:
                version = vp[len(mp) :].rstrip("/")
                cached = self._manifests.get((model_id, version))
                if cached is None:
                    try:
                        check_name(version, what="version")
                        raw = self.get_bytes(vp + "manifest.json")
                        if raw is None:
                            continue  # not committed (yet): invisible
                        cached = VersionManifest.model_validate_json(raw)
                    except (ValueError, ValidationError, UnsafePathError) as exc:
                        log.warning("skipping %s/%s: %s", model_id, version, exc)
                        continue
                    self._manifests[(model_id, version)] = cached
                manifests.append(cached)
            out.append(StoredModel(model_id, meta, manifests))
        return out

    def _abort_stale_uploads(self, cutoff: float) -> None:
        try:
            page = self.call("list_multipart_uploads", Prefix=self.key("models/"))
        except StoreError:
            return  # not every S3 implements listing uploads
        for up in page.get("Uploads", []):
            if up["Initiated"].timestamp() <= cutoff:
                self.call("abort_multipart_upload", Key=up["Key"], UploadId=up["UploadId"])


def _listed(models: list[StoredModel]) -> tuple[object, ...]:
    return tuple(
        (m.model_id, m.meta.model_dump_json(), tuple(v.version for v in m.manifests))
        for m in models
    )


def _no_such_key(exc: StoreError) -> bool:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")
