"""Answering ``GET``/``HEAD`` for one file: the safe open, RFC 9110, the zero-copy send.

Owns what the hub's ``/storage`` route and the node's peer server do alike once they
know which listed file a request names: open it so that nothing outside its base
directory can be reached (``O_NOFOLLOW`` on the last component, the descriptor's real
path checked afterwards through ``/proc/self/fd``, so a directory swapped for a symlink
is refused too; only regular files), then answer the request's conditionals and Range
(:mod:`accel.serving.conditional`) and send the bytes with ``sendfile(2)``
(:mod:`accel.serving.sendfile`). A missing, unsafe or special file is the same 404 as an
unlisted one, so an answer never tells what exists outside the listing.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from accel.serving.conditional import Representation, Request, evaluate, format_http_date
from accel.serving.problem import Problem
from accel.serving.sendfile import send_range

__all__ = ["NOT_FOUND_FILE", "FileSender", "OpenedFile", "etag_of", "open_inside"]

NOT_FOUND_FILE = "no such file in this model version"

#: ``allow(offset, length)``: raise a Problem when those bytes must not be sent
Allow = Callable[[int, int], None]
#: ``pace(nbytes)``: returns once ``nbytes`` more may be sent (an upload limit)
Pace = Callable[[int], Awaitable[None]]


def etag_of(sha256: str) -> str:
    """The strong ETag every accel server gives a file: its sha256 (first 40 hex digits),
    whatever holds it (a hub's store, a node's ready file, a node's partial file)."""
    return f'"{sha256[:40]}"'


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


def open_inside(base: str, segments: tuple[str, ...], etag: str) -> OpenedFile:
    """Open ``base/segments...`` (``base`` already resolved, the segments each checked by
    :func:`accel.serving.paths.check_relpath` or :func:`~accel.serving.paths.split_raw_path`)
    or raise a 404 :class:`Problem`."""
    path = os.path.join(base, *segments)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise Problem(404, "not_found", NOT_FOUND_FILE) from None
    # Where the descriptor really points (a directory on the way may be a symlink):
    # checked on the open file itself, so nothing can be swapped between check and use.
    try:
        if not _opened_inside(fd, base, path):
            raise Problem(404, "not_found", NOT_FOUND_FILE)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Problem(404, "not_found", NOT_FOUND_FILE)
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd=fd, size=st.st_size, etag=etag, mtime=int(st.st_mtime))


def _opened_inside(fd: int, base: str, path: str) -> bool:
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: resolve the path instead (racy, still refuses links)
        real = os.path.realpath(path)
    return real.startswith(base + os.sep)


class FileSender:
    """Answers requests for opened files; owns the thread pool of blocking sendfile calls."""

    def __init__(self, max_threads: int = 128) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="accel-send")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def answer(
        self,
        request: web.Request,
        f: OpenedFile,
        *,
        allow: Allow | None = None,
        pace: Pace | None = None,
    ) -> web.StreamResponse:
        """The 200/206/304/412/416 answer to ``request`` for ``f`` (errors as Problem);
        a client that left before the headers went out gets nothing (and no log).

        ``allow`` is asked about the bytes a 200 or 206 would carry (a HEAD too: it
        answers what the GET would) and may refuse them by raising a Problem (a peer
        holding only some blocks of a file); ``pace`` spaces the body's bytes out (an
        upload limit)."""
        try:
            return await self._answer(request, f, allow, pace)
        except ConnectionResetError:
            # aiohttp drops the connection when it tries to send this
            return web.Response(status=499)

    async def _answer(
        self, request: web.Request, f: OpenedFile, allow: Allow | None, pace: Pace | None
    ) -> web.StreamResponse:
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
        if allow is not None:
            allow(offset, length)

        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        if request.method == "HEAD" or length == 0:
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        await send_range(request, resp, self._pool, f.fd, offset, length, pace=pace)
        return resp
