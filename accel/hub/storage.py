"""``GET|HEAD /storage/models/{id}/{version}/{path}``: safe lookup, Range, zero-copy send.

Owns turning a raw request path into an open file descriptor (or a 404 that is the
same whether the file is outside the store, unlisted or missing) and sending a byte
range of it. The raw path is split and decoded once, segment by segment (aiohttp's
``match_info`` decodes ``%2F`` after routing); only files listed in that version's
manifest are looked up; the resolved path must stay inside the version's ``files``
directory and the final open refuses symlinks; the descriptor's real path is checked
afterwards (``/proc/self/fd``), so a directory swapped for a symlink is refused too.
Conditional headers and Range are decided by :mod:`accel.hub.conditional` (RFC 9110,
pure); bytes go out with ``sendfile(2)`` through :mod:`accel.hub.sendfile`, the one
place that touches the client's socket (and copes with it closing). ``web.FileResponse``
is not used:
it mishandles ``bytes=-0``, ETags in ``If-Range`` and custom ETags.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from accel.errors import UnsafePathError
from accel.hub.catalog import Catalog
from accel.hub.conditional import Representation, Request, evaluate, format_http_date
from accel.hub.paths import split_raw_path
from accel.hub.sendfile import send_range
from accel.schema import ManifestFile

__all__ = [
    "ListedFile",
    "OpenedFile",
    "Problem",
    "StorageSender",
    "find_listed_file",
    "open_listed_file",
]

_PREFIX = "/storage/models/"


class Problem(Exception):
    """An HTTP error answer: status, stable code and message (rendered as the error body)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


NOT_FOUND_FILE = "no such file in this model version"


@dataclass
class OpenedFile:
    """An open, listed file: descriptor, size, validators."""

    fd: int
    size: int
    etag: str
    mtime: int  # whole seconds: what Last-Modified says and conditionals compare

    @property
    def last_modified(self) -> str:
        return format_http_date(self.mtime)

    def close(self) -> None:
        os.close(self.fd)


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
        return f'"{self.entry.sha256[:40]}"'


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
        path = os.path.join(base, *listed.segments)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise Problem(404, "not_found", NOT_FOUND_FILE) from None
    # Where the descriptor really points (a directory on the way may be a symlink):
    # checked on the open file itself, so nothing can be swapped between check and use.
    if not _opened_inside(fd, base, path):
        os.close(fd)
        raise Problem(404, "not_found", NOT_FOUND_FILE)
    try:
        st = os.fstat(fd)
        if not _is_regular(st.st_mode):
            raise Problem(404, "not_found", NOT_FOUND_FILE)
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(
        fd=fd,
        size=st.st_size,
        etag=listed.etag,
        mtime=int(st.st_mtime),
    )


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


def _opened_inside(fd: int, base: str, path: str) -> bool:
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: resolve the path instead (racy, still refuses links)
        real = os.path.realpath(path)
    return real.startswith(base + os.sep)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


class StorageSender:
    """The storage handler with its thread pool for blocking sendfile calls."""

    def __init__(self, catalog: Catalog, max_threads: int = 128) -> None:
        self.catalog = catalog
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="accel-send")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        opened = open_listed_file(self.catalog, request.raw_path)
        try:
            return await self._answer(request, opened)
        except ConnectionResetError:
            # The client left before the headers went out: nothing to answer, nothing to
            # log (aiohttp drops the connection when it tries to send this).
            return web.Response(status=499)
        finally:
            opened.close()

    async def _answer(self, request: web.Request, f: OpenedFile) -> web.StreamResponse:
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": f.etag,
            "Last-Modified": f.last_modified,
            "Content-Type": "application/octet-stream",
            "Cache-Control": "no-cache",
        }
        decision = evaluate(
            Request.from_headers(request.method, request.headers.items()),
            Representation(etag=f.etag, last_modified=f.mtime, size=f.size),
            now=time.time(),
        )
        if decision.status == 412:
            raise Problem(
                412, "precondition_failed", f"the file changed ({decision.field})", headers
            )
        if decision.status == 304:
            return web.Response(status=304, headers=headers)
        if decision.unsatisfiable is not None:
            headers["Content-Range"] = decision.unsatisfiable.content_range
            raise Problem(416, "range_not_satisfiable", "the range lies outside the file", headers)
        if decision.byte_range is not None:
            wanted = decision.byte_range
            status, offset, length = 206, wanted.start, wanted.length
            headers["Content-Range"] = wanted.content_range
        else:
            status, offset, length = 200, 0, f.size

        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        if request.method == "HEAD" or length == 0:
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        await send_range(request, resp, self._pool, f.fd, offset, length)
        return resp
