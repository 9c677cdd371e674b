"""``/storage/...`` over an S3 store: a 307 to a presigned URL, or a proxied stream.

Owns the two ways a hub over a bucket answers for a file. Both look the file up in the
catalog exactly as the directory store does (:func:`accel.hub.storage.find_listed_file`:
same path rules, same 404) and decide conditionals and Range themselves with
:mod:`accel.serving.conditional`, against the object's own validators (its S3 ETag and
Last-Modified, from one HEAD per object): a client that learned them from the store
and comes back to the hub for a fresh URL (its presigned URL expired) must be judged
by the same ones. The ETag is a validator only; the checksum is ``X-Accel-Sha256``,
the manifest's.

- redirect (default): ``GET`` answers ``307`` to a presigned GET of the object, valid
  ``presign_ttl`` seconds, with ``X-Accel-Size`` and ``X-Accel-Sha256``; no file byte
  passes through the hub, and the client sends its chunks straight to the store. A
  presigned URL signs one method, so ``HEAD`` is answered by the hub from the manifest.
- proxy: the hub fetches the byte range it decided from the store (through a presigned
  URL: nothing is signed by hand) and streams it, with the store's 206/416 passed on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from yarl import URL

from accel.errors import StoreError
from accel.hub.catalog import Catalog
from accel.hub.storage import ListedFile, Problem, find_listed_file
from accel.serving.conditional import Decision, Representation, Request, evaluate, format_http_date

if TYPE_CHECKING:
    from accel.hub.stores.s3 import S3Store

__all__ = ["ProxySender", "RedirectSender"]

log = logging.getLogger("accel.hub")

_STREAM = 256 * 1024


@dataclass(frozen=True)
class _Object:
    """What the store says of an object: its validators (never a checksum)."""

    etag: str
    last_modified: int
    size: int


class _S3Sender:
    def __init__(self, catalog: Catalog, store: S3Store) -> None:
        self.catalog = catalog
        self.store = store
        self._objects: dict[str, _Object] = {}

    async def _object(self, listed: ListedFile) -> _Object:
        """The object's ETag and Last-Modified, from one HEAD per object and hub (the
        object of a committed version never changes; if it is replaced anyway, the
        store's own If-Match check on the chunk requests tells the client)."""
        key = self.store.file_key(listed.model_id, listed.version, listed.relpath)
        known = self._objects.get(key)
        if known is None:
            try:
                head = await asyncio.to_thread(self.store.call, "head_object", Key=key)
            except StoreError as exc:
                log.warning("/storage %s: %s", key, exc)
                raise Problem(
                    502, "store_error", "the object store did not serve this file"
                ) from None
            known = _Object(
                etag=str(head.get("ETag", "")),
                last_modified=int(head["LastModified"].timestamp()),
                size=int(head["ContentLength"]),
            )
            if known.size != listed.entry.size_bytes:
                log.warning("/storage %s: %d bytes in the store, manifest says %d", key,
                            known.size, listed.entry.size_bytes)  # fmt: skip
                raise Problem(502, "store_error", "the stored object does not match the manifest")
            if len(self._objects) > 65536:
                self._objects.clear()
            self._objects[key] = known
        return known

    async def _decide(
        self, request: web.Request
    ) -> tuple[ListedFile, _Object, Decision, dict[str, str]]:
        listed = find_listed_file(self.catalog, request.raw_path)
        obj = await self._object(listed)
        size = listed.entry.size_bytes
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": obj.etag,
            "Last-Modified": format_http_date(obj.last_modified),
            "Content-Type": "application/octet-stream",
            "Cache-Control": "no-store",
            "X-Accel-Size": str(size),
            "X-Accel-Sha256": listed.entry.sha256,
        }
        # The store's validators, so that a client's If-Match / If-Range mean the same
        # here as at the store its chunks go to (it learned them from either).
        decision = evaluate(
            Request.from_headers(request.method, request.headers.items()),
            Representation(etag=obj.etag, last_modified=obj.last_modified, size=size),
            now=time.time(),
        )
        if decision.status == 412:
            raise Problem(
                412, "precondition_failed", f"the file changed ({decision.field})", headers
            )
        if decision.unsatisfiable is not None:
            headers["Content-Range"] = decision.unsatisfiable.content_range
            raise Problem(416, "range_not_satisfiable", "the range lies outside the file", headers)
        return listed, obj, decision, headers

    def _url(self, listed: ListedFile) -> str:
        key = self.store.file_key(listed.model_id, listed.version, listed.relpath)
        return self.store.presign(key)

    @staticmethod
    def _status(decision: Decision, size: int, headers: dict[str, str]) -> tuple[int, int]:
        """Status and length of a 200/206 answer (Content-Range added for a 206)."""
        if decision.byte_range is not None:
            headers["Content-Range"] = decision.byte_range.content_range
            return 206, decision.byte_range.length
        return 200, size

    async def _head(
        self, request: web.Request, decision: Decision, size: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        status, length = self._status(decision, size, headers)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        await resp.prepare(request)
        await resp.write_eof()
        return resp


class RedirectSender(_S3Sender):
    """307 to a presigned URL: the store serves the bytes."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        listed, _, decision, headers = await self._decide(request)
        if decision.status == 304:
            return web.Response(status=304, headers=headers)
        if request.method == "HEAD":
            return await self._head(request, decision, listed.entry.size_bytes, headers)
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
        listed, obj, decision, headers = await self._decide(request)
        if decision.status == 304:
            return web.Response(status=304, headers=headers)
        size = listed.entry.size_bytes
        if request.method == "HEAD" or size == 0:
            return await self._head(request, decision, size, headers)
        wanted = decision.byte_range
        # Only the range decided here goes to the store, guarded by the object's ETag: a
        # store that replaced the object answers 412, passed on.
        upstream_headers = {"If-Match": obj.etag}
        if wanted is not None:
            upstream_headers["Range"] = f"bytes={wanted.start}-{wanted.start + wanted.length - 1}"
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
            if upstream.status == 412:
                raise Problem(412, "precondition_failed", "the stored object changed", headers)
            if upstream.status != expected:
                raise Problem(502, "store_error", f"the object store answered {upstream.status}")
            status, length = self._status(decision, size, headers)
            stream = web.StreamResponse(status=status, headers=headers)
            stream.content_length = length
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
