"""``GET|HEAD /storage/models/{id}/{version}/{path}``: safe lookup, Range, zero-copy send.

Owns turning a raw request path into an open file descriptor (or a 404 that is the
same whether the file is outside the store, unlisted or missing) and sending a byte
range of it. The raw path is split and decoded once, segment by segment (aiohttp's
``match_info`` decodes ``%2F`` after routing); only files listed in that version's
manifest are looked up; the resolved path must stay inside the version's ``files``
directory and the final open refuses symlinks; the descriptor's real path is checked
afterwards (``/proc/self/fd``), so a directory swapped for a symlink is refused too.
The open and the answer (conditionals, Range, ``sendfile(2)``) are the ones the node's
peer server uses too (:mod:`accel.serving.files`). ``web.FileResponse`` is not used:
it mishandles ``bytes=-0``, ETags in ``If-Range`` and custom ETags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from aiohttp import web

from accel.errors import UnsafePathError
from accel.hub.catalog import Catalog
from accel.schema import ManifestFile
from accel.serving.files import NOT_FOUND_FILE, FileSender, OpenedFile, etag_of, open_inside
from accel.serving.paths import split_raw_path
from accel.serving.problem import Problem

__all__ = [
    "ListedFile",
    "OpenedFile",
    "Problem",
    "StorageSender",
    "find_listed_file",
    "open_listed_file",
]

_PREFIX = "/storage/models/"


@dataclass(frozen=True)
class ListedFile:
    """A file a raw ``/storage`` path names that its version's manifest lists."""

    model_id: str
    version: str
    segments: tuple[str, ...]  # the file path's segments, each checked
    entry: ManifestFile

    @property
    def relpath(self) -> str:
        return "/".join(self.segments)

    @property
    def etag(self) -> str:
        """The hub's strong ETag of this file, whatever store holds it."""
        return etag_of(self.entry.sha256)


def find_listed_file(catalog: Catalog, raw_path: str) -> ListedFile:
    """The listed file a raw ``/storage/models/...`` path names, or raise Problem (400/404)."""
    if not raw_path.startswith(_PREFIX):
        raise Problem(404, "not_found", NOT_FOUND_FILE)
    try:
        segments = split_raw_path(raw_path[len(_PREFIX) :])
    except UnsafePathError:
        raise Problem(400, "bad_path", "the file path is not a clean relative path") from None
    catalog.refresh()
    # A model id is one segment (``whisper``) or two (``org/whisper``): a known one-segment
    # id wins, as in accel.hub.hfapi.split_repo.
    n = 1 if segments[0] in catalog.models else 2
    if len(segments) < n + 2:
        raise Problem(404, "not_found", NOT_FOUND_FILE)
    model_id, version = "/".join(segments[:n]), segments[n]
    relpath = "/".join(segments[n + 1 :])
    entry = catalog.file_entry(model_id, version, relpath)
    if entry is None:
        raise Problem(404, "not_found", NOT_FOUND_FILE)
    return ListedFile(model_id, version, segments[n + 1 :], entry)


def open_listed_file(catalog: Catalog, raw_path: str) -> OpenedFile:
    """Open the file a raw ``/storage/models/...`` path names, or raise Problem (400/404)."""
    listed = find_listed_file(catalog, raw_path)
    try:
        base = _real_base(catalog, listed.model_id, listed.version)
    except OSError:
        raise Problem(404, "not_found", NOT_FOUND_FILE) from None
    return open_inside(base, listed.segments, listed.etag)


_BASES: dict[tuple[str, str, str], str] = {}


def _real_base(catalog: Catalog, model_id: str, version: str) -> str:
    """The resolved ``files`` dir of a listed version (cached: resolving costs a stat per
    path component, and versions are immutable)."""
    key = (str(catalog.store.root), model_id, version)
    base = _BASES.get(key)
    if base is None:
        base = os.path.realpath(catalog.store.files_dir(model_id, version), strict=True)
        if len(_BASES) > 4096:
            _BASES.clear()
        _BASES[key] = base
    return base


class StorageSender:
    """The storage handler: the listed file, then the shared file answer."""

    def __init__(self, catalog: Catalog, max_threads: int = 128) -> None:
        self.catalog = catalog
        self._files = FileSender(max_threads)

    def close(self) -> None:
        self._files.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        opened = open_listed_file(self.catalog, request.raw_path)
        try:
            return await self._files.answer(request, opened)
        finally:
            opened.close()
