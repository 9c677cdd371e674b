"""A Hugging Face compatible endpoint as a source of model versions (``hf://REPO[@REV]``).

Owns the client side of the HF Hub API the manager needs: parsing ``hf://`` references,
resolving a revision to its commit sha with one ``GET /api/models/{repo}/revision/{rev}
?blobs=true``, turning the answer's ``siblings`` into a
:class:`~accel.schema.VersionManifest` (``version`` = the commit sha, so the version's
directory is named by it) and naming each file's ``/{repo}/resolve/{sha}/{path}`` URL.

Each file's size and sha256 come from its sibling's ``lfs`` entry. A small file kept in
git itself (no ``lfs``) has only a git blob id: it is fetched here once, held to its size
and blob id (``sha1("blob <len>\\0" + bytes)``), and the sha256 of those checked bytes goes
into the manifest, so the install that follows holds its download to it like any other
file. There are no blake3 blocks (``chunks`` is None): a wrong byte shows as a wrong
whole-file sha256, which the engine repairs (:mod:`accel.fetch.repair`).

The endpoint comes from ``--hf-endpoint`` or ``HF_ENDPOINT`` and has no default, so
nothing here reaches huggingface.co unless told to. ``HF_TOKEN`` is sent as a bearer
token to the endpoint's origin only, and the hub's token never is (each download carries
its own source's credentials: :mod:`accel.manager.credentials`). Never writes files; one
blocking GET per call, run in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from accel.durable import atomic_write_bytes
from accel.errors import (
    AccelError,
    AuthError,
    HubError,
    IntegrityError,
    NotFoundError,
    UnsafePathError,
    UsageError,
)
from accel.manager.credentials import OriginToken
from accel.manager.hubanswers import parse_manifest
from accel.manager.registry import RegistryStore, install_key
from accel.modelid import check_model_id, model_dir_name
from accel.schema import ManifestFile, Registry, VersionManifest, version_checksum

__all__ = [
    "HF_PREFIX",
    "HfInstalls",
    "HfRef",
    "HfRevision",
    "HfSource",
    "git_blob_id",
    "is_hf_ref",
    "linked_digest",
]

HF_PREFIX = "hf://"
#: the largest file taken from git itself (no LFS) that is fetched to learn its sha256
MAX_GIT_FILE = 64 * 1024 * 1024


def is_hf_ref(value: str) -> bool:
    """Whether ``value`` names a repository of an HF endpoint (``hf://...``)."""
    return value.startswith(HF_PREFIX)


@dataclass(frozen=True)
class HfRef:
    """``hf://REPO_ID[@REVISION]`` parsed: the repo id and the revision asked (None: main)."""

    repo: str
    revision: str | None = None

    @classmethod
    def parse(cls, value: str) -> HfRef:
        body = value.removeprefix(HF_PREFIX)
        repo, at, revision = body.partition("@")
        try:
            check_model_id(repo)
        except Exception:
            raise UsageError(
                f"{value!r} is not hf://REPO_ID[@REVISION]",
                hint="e.g. hf://openai/whisper-tiny or hf://openai/whisper-tiny@main",
            ) from None
        if at and (not revision or any(c in revision for c in "\0\n\r ")):
            raise UsageError(f"{value!r} has an empty or unusable revision", hint="e.g. @main")
        return cls(repo, revision or None)

    def __str__(self) -> str:
        return HF_PREFIX + self.repo + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class HfRevision:
    """A revision resolved: what was asked, the commit sha it names, and its files."""

    repo: str
    revision: str
    sha: str
    manifest: VersionManifest


def git_blob_id(data: bytes) -> str:
    """Git's object id of a blob with these bytes (what ``blobId`` says for a git file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HfSource:
    """One HF-compatible endpoint (``--hf-endpoint`` / ``HF_ENDPOINT``) and its token."""

    def __init__(
        self, endpoint: str | None = None, token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        endpoint = endpoint or os.environ.get("HF_ENDPOINT")
        if not endpoint:
            raise UsageError(
                "no Hugging Face endpoint given",
                hint="pass --hf-endpoint URL or set HF_ENDPOINT (there is no default)",
            )
        self.endpoint = endpoint.rstrip("/")
        self.token = token if token is not None else (os.environ.get("HF_TOKEN") or None)
        #: HF_TOKEN goes to this endpoint's origin only; the hub's token never comes here
        self.credentials = OriginToken(self.endpoint, self.token)
        self.timeout = timeout

    @property
    def headers(self) -> dict[str, str]:
        """The headers every request to the endpoint carries (the token, when given)."""
        return self.credentials.headers

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers of a request to ``url``: the token only at the endpoint's origin."""
        return self.credentials.headers_for(url)

    def file_url(self, repo: str, sha: str, path: str) -> str:
        """``/{repo}/resolve/{sha}/{path}``: by commit sha, so every file is of one commit."""
        return f"{self.endpoint}/{repo}/resolve/{sha}/{quote(path, safe='/')}"

    async def revision(self, repo: str, revision: str | None) -> HfRevision:
        """Resolve ``revision`` (None: ``main``) of ``repo`` to its commit and files."""
        return await asyncio.to_thread(self._revision, repo, revision or "main")

    # -- blocking side (a thread) ----------------------------------------------------------
    def _get(self, url: str) -> bytes:
        headers = {**self.headers_for(url), "Accept-Encoding": "identity"}
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return bytes(r.read())
        except urllib.error.HTTPError as exc:
            code = exc.headers.get("X-Error-Code", "")
            if exc.code in (401, 403):
                raise AuthError(
                    f"{self.endpoint} refused the request ({exc.code})",
                    hint="set HF_TOKEN to a token this endpoint accepts",
                    url=url,
                ) from None
            if exc.code == 404:
                what = {
                    "RepoNotFound": "no such repository",
                    "RevisionNotFound": "no such revision",
                    "EntryNotFound": "no such file",
                }.get(code, "not found")
                raise NotFoundError(f"{what}: {url}", url=url) from None
            raise HubError(f"{self.endpoint} answered {exc.code} for {url}", url=url) from None
        except (urllib.error.URLError, OSError) as exc:
            raise HubError(
                f"cannot reach {self.endpoint}: {getattr(exc, 'reason', exc)}",
                hint="check --hf-endpoint / HF_ENDPOINT",
                url=url,
            ) from exc

    def _revision(self, repo: str, revision: str) -> HfRevision:
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}?blobs=true"
        try:
            body: Any = json.loads(self._get(url))
            sha = str(body["sha"])
            siblings = list(body["siblings"])
        except (ValueError, KeyError, TypeError) as exc:
            raise HubError(f"{url} is not a revision-info answer: {exc}", url=url) from None
        files = [self._file(repo, sha, s) for s in siblings]
        updated = body.get("lastModified") or datetime.now(UTC).isoformat()
        manifest = VersionManifest(
            model_id=repo,
            version=sha,
            size_bytes=sum(f.size_bytes for f in files),
            files=files,
            checksum_sha256=version_checksum(files),
            updated_at=str(updated),
        )
        # The hub's rules for a manifest (safe paths, sha256 shape, no duplicates, no file
        # where a directory must be) hold for an endpoint's siblings too.
        manifest = parse_manifest(manifest.model_dump(mode="json"), repo, sha, need_blocks=False)
        return HfRevision(repo, revision, sha, manifest)

    def _file(self, repo: str, sha: str, sibling: dict[str, Any]) -> ManifestFile:
        path = str(sibling["rfilename"])
        lfs = sibling.get("lfs")
        if lfs:
            return ManifestFile(
                path=path, size_bytes=int(lfs["size"]), sha256=str(lfs["sha256"]), chunks=None
            )
        size, blob_id = sibling.get("size"), sibling.get("blobId")
        if not isinstance(size, int) or not isinstance(blob_id, str) or size > MAX_GIT_FILE:
            raise HubError(
                f"{repo}: {path} has no sha256 (not an LFS file) and no usable size/blobId",
                hint="the endpoint must answer ?blobs=true with size and blobId",
            )
        data = self._get(self.file_url(repo, sha, path))
        if len(data) != size or git_blob_id(data) != blob_id:
            raise IntegrityError(
                f"{repo}: {path} does not match its git blob id {blob_id} / size {size}",
                path=path,
            )
        return ManifestFile(
            path=path, size_bytes=size, sha256=hashlib.sha256(data).hexdigest(), chunks=None
        )


class HfInstalls:
    """The manager's side of ``hf://`` installs: resolved revisions and registry aliases.

    An install of ``hf://REPO@REV`` is an install of version ``<commit sha>`` of model
    ``REPO`` whose manifest comes from the endpoint (not the hub); the registry record
    keeps ``source`` (the reference asked, without the revision), ``revisions`` (the
    names asked that resolved to this commit: its aliases) and ``source_endpoint``, so
    ``get_model_path(REPO, REV)`` and ``update`` find it again. The endpoint is only
    needed once an ``hf://`` is used.

    Each resolved revision is also written to ``<state_dir>/hf/<org--name>@<sha>.json``
    (its manifest and endpoint) before its install starts, so a later process that never
    resolved it (a retry or ``resume`` of ``REPO@SHA`` through ``ModelManager``, the node daemon after a
    restart, a rerun after kill -9) installs it from the same endpoint, not from the hub.
    A commit's files never change, so the copy never goes stale.
    """

    def __init__(
        self, endpoint: str | None = None, token: str | None = None, state_dir: Path | None = None
    ) -> None:
        self._endpoint = endpoint
        self._token = token
        self._source: HfSource | None = None
        self._resolved: dict[tuple[str, str], HfRevision] = {}
        #: the endpoint each resolved version came from (the recorded one, for a loaded one)
        self._origin: dict[tuple[str, str], str] = {}
        self._dir = state_dir / "hf" if state_dir is not None else None

    @property
    def source(self) -> HfSource:
        return self._source_for(None)

    def _source_for(self, recorded: str | None) -> HfSource:
        # The endpoint given (or HF_ENDPOINT) wins; an update without either uses the one
        # the install recorded.
        if self._source is None:
            endpoint = self._endpoint or os.environ.get("HF_ENDPOINT") or recorded
            self._source = HfSource(endpoint, self._token)
        return self._source

    async def resolve(
        self, ref: str, version: str | None, *, recorded_endpoint: str | None = None
    ) -> HfRevision:
        """``hf://REPO[@REV]`` (``version``, when given, is the revision) to its commit."""
        parsed = HfRef.parse(ref)
        source = self._source_for(recorded_endpoint)
        rev = await source.revision(parsed.repo, version or parsed.revision)
        self._resolved[(rev.repo, rev.sha)] = rev
        self._origin[(rev.repo, rev.sha)] = source.endpoint
        await asyncio.to_thread(self._remember, rev, source.endpoint)
        return rev

    # -- resolved revisions on disk ----------------------------------------------------
    def _path(self, model_id: str, version: str) -> Path | None:
        if self._dir is None:
            return None
        try:
            name = f"{model_dir_name(model_id)}@{version}.json"
        except UnsafePathError:
            return None
        return self._dir / name if "/" not in version and version not in ("", ".", "..") else None

    def _remember(self, rev: HfRevision, endpoint: str) -> None:
        path = self._path(rev.repo, rev.sha)
        if path is None:
            return
        body = {
            "schema_version": 1,
            "endpoint": endpoint,
            "revision": rev.revision,
            "manifest": rev.manifest.model_dump(mode="json"),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(body).encode(), durable=False)

    def _known(self, model_id: str, version: str) -> bool:
        """Whether ``model_id@version`` is an ``hf://`` version: resolved here, or by an
        earlier process (loaded from its file; an unreadable file is a hub version)."""
        key = (model_id, version)
        if key in self._resolved:
            return True
        path = self._path(model_id, version)
        if path is None or not path.is_file():
            return False
        try:
            body = json.loads(path.read_bytes())
            manifest = parse_manifest(body["manifest"], model_id, version, need_blocks=False)
            endpoint, revision = str(body["endpoint"]), str(body["revision"])
        except (OSError, ValueError, KeyError, TypeError, AccelError):
            return False
        self._resolved[key] = HfRevision(model_id, revision, version, manifest)
        self._origin[key] = endpoint
        return True

    def manifest(self, model_id: str, version: str) -> VersionManifest | None:
        """The manifest of a resolved ``hf://`` version, None for a hub version."""
        return (
            self._resolved[(model_id, version)].manifest if self._known(model_id, version) else None
        )

    def url_of(self, model_id: str, version: str) -> Callable[[str], str] | None:
        """File URLs of an ``hf://`` version (by commit sha), None for a hub version."""
        if not self._known(model_id, version):
            return None
        source = self._source_for(self._origin.get((model_id, version)))
        return lambda path: source.file_url(model_id, version, path)

    def headers(self, model_id: str, version: str) -> dict[str, str] | None:
        """The headers of a resolved ``hf://`` version's downloads (``{}`` without
        HF_TOKEN: never the hub's), None for a hub version."""
        if not self._known(model_id, version):
            return None
        return self._source_for(self._origin.get((model_id, version))).headers

    def record(self, registry: RegistryStore, rev: HfRevision) -> None:
        """Write source, revision and endpoint into the version's registry record."""
        key = install_key(rev.repo, rev.sha)
        endpoint = self.source.endpoint

        def change(reg: Registry) -> None:
            for other in reg.installs.values():  # an alias names the newest resolve only
                if other.model_id == rev.repo and rev.revision in other.revisions:
                    other.revisions.remove(rev.revision)
            rec = reg.installs.get(key)
            if rec is not None:
                rec.source = HF_PREFIX + rev.repo
                rec.revisions = sorted({*rec.revisions, rev.revision})
                rec.source_endpoint = endpoint

        registry.update(change)

    @staticmethod
    def alias(reg: Registry, model_id: str, revision: str | None) -> str | None:
        """The commit sha an ``hf://`` model's revision name (None: main) was installed as."""
        want = revision or "main"
        for rec in reg.installs.values():
            if rec.model_id == model_id and rec.source and want in rec.revisions:
                return rec.version
        return None

    @staticmethod
    def installed_refs(reg: Registry) -> list[tuple[str, str, str | None]]:
        """``(hf ref, revision, endpoint)`` of every ready ``hf://`` install with an alias."""
        return sorted(
            {
                (rec.source, revision, rec.source_endpoint)
                for rec in reg.installs.values()
                if rec.source and rec.state == "ready"
                for revision in rec.revisions
            },
            key=str,
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def linked_digest(
    url: str, headers: dict[str, str], timeout: float = 30.0
) -> tuple[str | None, int | None]:
    """The sha256 and size an HF ``/resolve/`` URL announces (``X-Linked-Etag``/``-Size``).

    One ``HEAD`` without following the redirect (the metadata is on the redirect, as
    ``huggingface_hub`` reads it). ``(None, None)`` when the URL does not announce them
    (a git file, or not an HF endpoint): the download is then unverified, as before.
    """
    req = urllib.request.Request(url, method="HEAD", headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        resp = opener.open(req, timeout=timeout)
        h = resp.headers
        resp.close()
    except urllib.error.HTTPError as exc:  # the 302 itself lands here
        h = exc.headers
    except (urllib.error.URLError, OSError):
        return None, None
    etag = (h.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    size = h.get("X-Linked-Size")
    sha = etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None
    return sha, (int(size) if size and size.isascii() and size.isdigit() else None)
