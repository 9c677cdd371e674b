"""``/storage/...`` over an S3 store: a 307 to a presigned URL, or a proxied stream.

Owns the two ways a hub over a bucket answers for a file. Both look the file up in the
catalog exactly as the directory store does (:func:`accel.hub.storage.find_listed_file`:
same path rules, same 404) and decide conditionals and Range themselves with
:mod:`accel.hub.conditional` against the hub's own validators (the manifest's SHA256 as
a strong ETag, its ``updated_at`` as Last-Modified), so a client sees the same
validators from every kind of hub; an S3 ETag is never shown as a checksum.

- redirect (default): ``GET`` answers ``307`` to a presigned GET of the object, valid
  ``presign_ttl`` seconds, with ``X-Accel-Size`` and ``X-Accel-Sha256``; no file byte
  passes through the hub, and the client sends its chunks straight to the store. A
  presigned URL signs one method, so ``HEAD`` is answered by the hub from the manifest.
- proxy: the hub fetches the byte range it decided from the store (through a presigned
  URL: nothing is signed by hand) and streams it, with the store's 206/416 passed on.
"""

from __future__ import annotations

import calendar
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from yarl import URL

from accel.hub.catalog import Catalog
from accel.hub.conditional import Decision, Representation, Request, evaluate, format_http_date
from accel.hub.storage import ListedFile, Problem, find_listed_file

if TYPE_CHECKING:
    from accel.hub.stores.s3 import S3Store

__all__ = ["ProxySender", "RedirectSender"]

_STREAM = 256 * 1024


def _epoch(updated_at: str) -> int | None:
    try:
        return calendar.timegm(time.strptime(updated_at, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


class _S3Sender:
    def __init__(self, catalog: Catalog, store: S3Store) -> None:
        self.catalog = catalog
        self.store = store

    def _decide(self, request: web.Request) -> tuple[ListedFile, Decision, dict[str, str]]:
        listed = find_listed_file(self.catalog, request.raw_path)
        manifest = self.catalog.manifest(listed.model_id, listed.version)
        modified = _epoch(manifest.updated_at) if manifest is not None else None
        size = listed.entry.size_bytes
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": listed.etag,
            "Content-Type": "application/octet-stream",
            "Cache-Control": "no-store",
            "X-Accel-Size": str(size),
            "X-Accel-Sha256": listed.entry.sha256,
        }
        if modified is not None:
            headers["Last-Modified"] = format_http_date(modified)
        decision = evaluate(
            Request.from_headers(request.method, request.headers.items()),
            Representation(etag=listed.etag, last_modified=modified, size=size),
            now=time.time(),
        )
        if decision.status == 412:
            raise Problem(
                412, "precondition_failed", f"the file changed ({decision.field})", headers
            )
        if decision.unsatisfiable is not None:
            headers["Content-Range"] = decision.unsatisfiable.content_range
            raise Problem(416, "range_not_satisfiable", "the range lies outside the file", headers)
        return listed, decision, headers

    def _url(self, listed: ListedFile) -> str:
        key = self.store.file_key(listed.model_id, listed.version, listed.relpath)
        return self.store.presign(key)

    @staticmethod
    def _head(decision: Decision, size: int, headers: dict[str, str]) -> web.Response:
        status, length = 200, size
        if decision.byte_range is not None:
            status, length = 206, decision.byte_range.length
            headers["Content-Range"] = decision.byte_range.content_range
        resp = web.Response(status=status, headers=headers)
        resp.content_length = length
        return resp


class RedirectSender(_S3Sender):
    """307 to a presigned URL: the store serves the bytes."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        listed, decision, headers = self._decide(request)
        if decision.status == 304:
            return web.Response(status=304, headers=headers)
        if request.method == "HEAD":
            return self._head(decision, listed.entry.size_bytes, headers)
        headers["Location"] = self._url(listed)
        headers.pop("Content-Type")
        return web.Response(status=307, headers=headers)

    def close(self) -> None:
        pass


class ProxySender(_S3Sender):
    """The hub streams the bytes from the store (for clients that cannot reach it)."""

    def __init__(self, catalog: Catalog, store: S3Store) -> None:
        super().__init__(catalog, store)
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        listed, decision, headers = self._decide(request)
        if decision.status == 304:
            return web.Response(status=304, headers=headers)
        size = listed.entry.size_bytes
        if request.method == "HEAD" or size == 0:
            return self._head(decision, size, headers)
        wanted = decision.byte_range
        upstream_headers = (
            {"Range": f"bytes={wanted.start}-{wanted.start + wanted.length - 1}"} if wanted else {}
        )
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                auto_decompress=False,
            )
        url = URL(self._url(listed), encoded=True)  # re-quoting would break the signature
        try:
            upstream = await self._session.get(url, headers=upstream_headers)
        except aiohttp.ClientError as exc:
            raise Problem(
                502, "store_unreachable", f"the object store did not answer: {exc}"
            ) from None
        async with upstream:
            expected = 206 if wanted else 200
            if upstream.status == 416:
                headers["Content-Range"] = f"bytes */{size}"
                raise Problem(
                    416, "range_not_satisfiable", "the range lies outside the file", headers
                )
            if upstream.status != expected:
                raise Problem(502, "store_error", f"the object store answered {upstream.status}")
            resp = self._head(decision, size, headers)
            stream = web.StreamResponse(status=resp.status, headers=resp.headers)
            stream.content_length = resp.content_length
            await stream.prepare(request)
            try:
                async for block in upstream.content.iter_chunked(_STREAM):
                    await stream.write(block)
                await stream.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client left, or the store cut off: the length tells the client
            return stream

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def close(self) -> None:
        pass
