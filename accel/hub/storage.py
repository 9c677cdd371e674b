"""``GET|HEAD /storage/models/{id}/{version}/{path}``: safe lookup, Range, zero-copy send.

Owns turning a raw request path into an open file descriptor (or a 404 that is the
same whether the file is outside the store, unlisted or missing) and sending a byte
range of it. The raw path is split and decoded once, segment by segment (aiohttp's
``match_info`` decodes ``%2F`` after routing); only files listed in that version's
manifest are looked up; the resolved path must stay inside the version's ``files``
directory and the final open refuses symlinks; the descriptor's real path is checked
afterwards (``/proc/self/fd``), so a directory swapped for a symlink is refused too.
Bytes go out with ``sendfile(2)``: the first call in the event loop with the socket
corked (headers and first bytes leave together; a chunk-sized range usually needs no
more), the rest from a worker thread on duplicated descriptors (uvloop has no
``loop.sendfile``), so no Python touches the payload. ``web.FileResponse`` is not used:
it mishandles ``bytes=-0``, ETags in ``If-Range`` and custom ETags.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import web

from accel.errors import UnsafePathError
from accel.hub.catalog import Catalog
from accel.hub.paths import split_raw_path
from accel.hub.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range

__all__ = ["OpenedFile", "Problem", "StorageSender", "open_listed_file"]

_PREFIX = "/storage/models/"
_STALL_S = 60.0
_INLINE_MAX = 1024 * 1024


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
    last_modified: str

    def close(self) -> None:
        os.close(self.fd)


def open_listed_file(catalog: Catalog, raw_path: str) -> OpenedFile:
    """Open the file a raw ``/storage/models/...`` path names, or raise Problem (400/404)."""
    if not raw_path.startswith(_PREFIX):
        raise Problem(404, "not_found", NOT_FOUND_FILE)
    try:
        segments = split_raw_path(raw_path[len(_PREFIX) :])
    except UnsafePathError:
        raise Problem(400, "bad_path", "the file path is not a clean relative path") from None
    if len(segments) < 3:
        raise Problem(404, "not_found", NOT_FOUND_FILE)
    model_id, version, relpath = segments[0], segments[1], "/".join(segments[2:])
    catalog.refresh()
    entry = catalog.file_entry(model_id, version, relpath)
    if entry is None:
        raise Problem(404, "not_found", NOT_FOUND_FILE)
    try:
        base = _real_base(catalog, model_id, version)
        path = os.path.join(base, *segments[2:])
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
        etag=f'"{entry.sha256[:40]}"',
        last_modified=formatdate(st.st_mtime, usegmt=True),
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


def _etag_listed(header: str, etag: str) -> bool:
    values = [v.strip() for v in header.split(",")]
    return "*" in values or etag in values


def _send_blocking(
    sock_fd: int, file_fd: int, offset: int, count: int, stop: threading.Event
) -> int:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` with sendfile(2); returns bytes sent.

    Owns both descriptors (duplicates made for this call) and closes them, so a caller
    that is cancelled meanwhile can never close a descriptor this thread still uses.
    """
    try:
        return _send_loop(sock_fd, file_fd, offset, count, stop)
    finally:
        os.close(sock_fd)
        os.close(file_fd)


def _send_loop(sock_fd: int, file_fd: int, offset: int, count: int, stop: threading.Event) -> int:
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    sent = 0
    idle = 0.0
    while sent < count:
        if stop.is_set():
            raise ConnectionResetError("send cancelled")
        try:
            n = os.sendfile(sock_fd, file_fd, offset + sent, count - sent)
        except BlockingIOError:
            if poller.poll(500):
                idle = 0.0
            else:
                idle += 0.5
                if idle >= _STALL_S:
                    raise TimeoutError("client stopped reading") from None
            continue
        except InterruptedError:
            continue
        if n == 0:
            raise OSError(errno.EIO, "file shrank while being sent")
        sent += n
    return sent


def _socket_of(request: web.Request) -> socket.socket | None:
    transport = request.transport
    return transport.get_extra_info("socket") if transport is not None else None


def _cork(sock: socket.socket | None, on: bool) -> None:
    if sock is not None and hasattr(socket, "TCP_CORK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)


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
        if_match = request.headers.get("If-Match")
        if if_match is not None and not _etag_listed(if_match, f.etag):
            raise Problem(412, "precondition_failed", "the file changed (If-Match)", headers)
        if_none = request.headers.get("If-None-Match")
        if if_none is not None and _etag_listed(if_none, f.etag):
            return web.Response(status=304, headers=headers)

        wanted = parse_range(request.headers.get("Range"), f.size)
        if wanted is not None and not if_range_allows(
            request.headers.get("If-Range"), f.etag, f.last_modified
        ):
            wanted = None
        if isinstance(wanted, Unsatisfiable):
            headers["Content-Range"] = wanted.content_range
            raise Problem(416, "range_not_satisfiable", "the range lies outside the file", headers)
        if isinstance(wanted, ByteRange):
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
        # Corked, the headers wait in the socket for the first body bytes and leave with
        # them in one segment (what nginx's tcp_nopush does): on loopback each separate
        # write costs a full trip through the TCP stack.
        sock = _socket_of(request)
        _cork(sock, True)
        try:
            await resp.prepare(request)
            await self._sendfile(request, resp, f.fd, offset, length)
        finally:
            _cork(sock, False)
        return resp

    async def _send_rest(
        self,
        transport: asyncio.BaseTransport,
        resp: web.StreamResponse,
        sock_no: int,
        fd: int,
        offset: int,
        length: int,
    ) -> None:
        sock_fd = os.dup(sock_no)
        file_fd = os.dup(fd)
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._pool, _send_blocking, sock_fd, file_fd, offset, length, stop
            )
        except (OSError, TimeoutError):
            # Client gone or stalled: the response cannot be completed; drop the connection.
            resp.force_close()
            transport.close()
        finally:
            stop.set()

    async def _sendfile(
        self, request: web.Request, resp: web.StreamResponse, fd: int, offset: int, length: int
    ) -> None:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None:
            raise ConnectionResetError("connection lost")
        # The headers must be on the wire before our bytes: wait for aiohttp's buffer.
        for _ in range(200):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        else:
            transport.close()
            return
        # Small answers (and the start of big ones) go out right here: one non-blocking
        # sendfile(2) from the page cache, no thread hop. Whatever the socket buffer did
        # not take is finished by a worker thread.
        try:
            sent = os.sendfile(sock.fileno(), fd, offset, min(length, _INLINE_MAX))
        except BlockingIOError:
            sent = 0
        except OSError:
            resp.force_close()
            transport.close()
            return
        _cork(sock, False)  # headers and first bytes go now; the rest streams uncorked
        if sent < length:
            await self._send_rest(transport, resp, sock.fileno(), fd, offset + sent, length - sent)
            if transport.is_closing():
                return
        await resp.write_eof()
