"""The hub's view of its store: models, versions, manifests, and their serialized answers.

Owns holding the store's models in memory and the bytes of every catalog answer.
Answers are serialized once per catalog change (not per request) together with a
strong ETag, so a request costs a dict lookup. The store (a
:class:`~accel.hub.stores.base.ModelStore`: directory or S3) says cheaply whether it
changed (``signature()``) and loads its models; the catalog never knows which kind it
is, and never touches the files of a version.

How fast a hub sees a publish: a directory store is looked at per request (one
``stat``), an S3 store by its own poll (every ``--catalog-poll`` seconds). A publish
notice (PostgreSQL ``LISTEN/NOTIFY``, :mod:`accel.hub.catalog_feed`) calls
:meth:`Catalog.notice`, which has the store look again at once; notices arriving
during a look are folded into one more look.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from accel.hub.store import Store
from accel.hub.stores.base import ModelStore
from accel.hub.stores.directory import DirectoryStore
from accel.schema import FileEntry, ManifestFile, ModelInfo, VersionInfo, VersionManifest

__all__ = ["Answer", "Catalog", "version_key"]

log = logging.getLogger("accel.hub")

#: after a publish notice, the store is looked at once and again after these delays
_LOOK_AGAIN_S = (1.0, 5.0)


@dataclass(frozen=True)
class Answer:
    """A serialized JSON answer and its strong ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, value: object) -> Answer:
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: numeric parts compare as numbers (``1.10.0`` after ``1.9.0``)."""
    parts = re.split(r"[.+-]", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


@dataclass
class _Snapshot:
    models: dict[str, ModelInfo] = field(default_factory=dict)
    manifests: dict[tuple[str, str], VersionManifest] = field(default_factory=dict)
    files: dict[tuple[str, str], dict[str, ManifestFile]] = field(default_factory=dict)
    list_answers: dict[tuple[str | None, str | None], Answer] = field(default_factory=dict)
    model_answers: dict[str, Answer] = field(default_factory=dict)
    manifest_answers: dict[tuple[str, str], Answer] = field(default_factory=dict)


class Catalog:
    """Everything the hub knows about its store, reloaded when the store changes."""

    def __init__(self, store: Path | ModelStore, *, mirrors: Sequence[str] = ()) -> None:
        if isinstance(store, str | Path):
            store = DirectoryStore(Path(store))
        self.backend: ModelStore = store
        #: the hub's own mirrors (``accel serve --mirror``), added to every manifest's
        self.mirrors = tuple(mirrors)
        self._signature: object = None
        self._snap = _Snapshot()
        self.generation = 0
        self.notices = 0
        self._look_again = False
        self._looking: asyncio.Task[None] | None = None
        self._later: list[asyncio.TimerHandle] = []
        self.refresh()

    @property
    def store(self) -> Store:
        """The directory layout (only for a directory store: its sendfile route needs it)."""
        if not isinstance(self.backend, DirectoryStore):
            raise TypeError(f"{self.backend.description} is not a directory store")
        return self.backend.layout

    def refresh(self) -> None:
        """Reload the store if it changed since the last load (cheap when it did not)."""
        sig = self.backend.signature()
        if sig != self._signature:
            self._snap = self._load()
            self._signature = sig
            self.generation += 1
            # The catalog is most of the heap and lives until the next load: out of the
            # cyclic collector's sight, a full collection no longer walks 10,000 models'
            # objects (126-164 ms at 10,000 models) in the middle of requests.
            # Refcounting still frees the old snapshot when the new one replaces it.
            gc.freeze()

    def notice(self) -> None:
        """A publish notice: have the store look now (call on the event loop).

        And again 1 s and 5 s later: a poll of the store's own that began before the
        publish and ends after this look would put the older listing back; a look
        started after the publish cannot.
        """
        self.notices += 1
        self._look_soon()
        loop = asyncio.get_running_loop()
        self._later = [h for h in self._later if not h.cancelled() and h.when() > loop.time()]
        self._later += [loop.call_later(delay, self._look_soon) for delay in _LOOK_AGAIN_S]

    async def close(self) -> None:
        """Stop the looks that notices scheduled."""
        for handle in self._later:
            handle.cancel()
        self._later = []
        if self._looking is not None and not self._looking.done():
            self._looking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._looking

    def _look_soon(self) -> None:
        self._look_again = True
        if self._looking is None or self._looking.done():
            self._looking = asyncio.create_task(self._look(), name="accel-catalog-look")

    async def _look(self) -> None:
        while self._look_again:
            self._look_again = False
            try:
                # prepare() is the interface's "check the store and read it": for an S3
                # store one HEAD and one poll of its stamp, for a directory a mkdir -p.
                await asyncio.to_thread(self.backend.prepare)
            except Exception as exc:  # the store's poll keeps going; say why once per notice
                log.warning(
                    "catalog: looking at %s after a notice: %s", self.backend.description, exc
                )
                continue
            self.refresh()

    # -- loading -------------------------------------------------------------------------
    def _load(self) -> _Snapshot:
        snap = _Snapshot()
        for stored in self.backend.load():
            versions = sorted(stored.manifests, key=lambda m: version_key(m.version))
            model_id, meta = stored.model_id, stored.meta
            for m in versions:
                if self.mirrors:
                    m = m.model_copy(update={"mirrors": _with_hub_mirrors(m, self.mirrors)})
                snap.manifests[(model_id, m.version)] = m
                snap.files[(model_id, m.version)] = {f.path: f for f in m.files}
            default = meta.default_version
            if default not in {m.version for m in versions}:
                default = versions[-1].version if versions else None
            snap.models[model_id] = ModelInfo(
                id=model_id,
                name=meta.name,
                versions=[_version_info(m) for m in versions],
                default_version=default,
                task=meta.task,
                languages=list(meta.languages),
            )
        for model_id, info in snap.models.items():
            snap.model_answers[model_id] = Answer.of(info.model_dump(mode="json"))
        for key, manifest in snap.manifests.items():
            snap.manifest_answers[key] = Answer.of(manifest.model_dump(mode="json"))
        snap.list_answers[(None, None)] = Answer.of(
            [info.model_dump(mode="json") for info in snap.models.values()]
        )
        return snap

    # -- queries -------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ModelInfo]:
        return self._snap.models

    def list_answer(self, task: str | None = None, language: str | None = None) -> Answer:
        """``GET /api/models`` with optional filters, cached per filter pair."""
        snap = self._snap
        key = (task, language)
        answer = snap.list_answers.get(key)
        if answer is None:
            chosen = [
                info.model_dump(mode="json")
                for info in snap.models.values()
                if (task is None or info.task == task)
                and (language is None or language in info.languages)
            ]
            answer = Answer.of(chosen)
            if len(snap.list_answers) < 256:
                snap.list_answers[key] = answer
        return answer

    def model_answer(self, model_id: str) -> Answer | None:
        return self._snap.model_answers.get(model_id)

    def manifest_answer(self, model_id: str, version: str) -> Answer | None:
        return self._snap.manifest_answers.get((model_id, version))

    def manifest(self, model_id: str, version: str) -> VersionManifest | None:
        return self._snap.manifests.get((model_id, version))

    def file_entry(self, model_id: str, version: str, relpath: str) -> ManifestFile | None:
        """The manifest entry of a file, or None when that version does not list it."""
        files = self._snap.files.get((model_id, version))
        return None if files is None else files.get(relpath)


def _with_hub_mirrors(m: VersionManifest, templates: Sequence[str]) -> list[str]:
    """A version's mirrors: its own, then the hub's. A hub mirror is a template with
    ``{model_id}`` and ``{version}`` (percent-encoded), or a prefix under which the
    mirror keeps the hub's layout (``PREFIX/{model_id}/{version}``)."""
    out = list(m.mirrors)
    mid, ver = quote(m.model_id, safe=""), quote(m.version, safe="")
    for t in templates:
        if "{model_id}" in t or "{version}" in t:
            base = t.replace("{model_id}", mid).replace("{version}", ver)
        else:
            base = f"{t.rstrip('/')}/{mid}/{ver}"
        if base not in out:
            out.append(base)
    return out


def _version_info(m: VersionManifest) -> VersionInfo:
    return VersionInfo(
        version=m.version,
        size_bytes=m.size_bytes,
        files=[FileEntry(path=f.path, size_bytes=f.size_bytes, sha256=f.sha256) for f in m.files],
        checksum_sha256=m.checksum_sha256,
        updated_at=m.updated_at,
    )
