"""The node's peer server: other nodes read this node's files over the hub's /storage protocol.

Owns the read-only listener of ``accel node --serve-peers``, apart from the control
API's (its own socket, its own app: nothing of the control API is reachable here):

- ``GET|HEAD /storage/models/{id}/{version}/{path}``: the hub's answer (Range, ETag =
  the file's sha256, conditionals, the path rules, ``sendfile(2)``), all from
  :mod:`accel.serving`, for what :class:`~accel.node.holdings.Holdings` finds: ready
  files whole, and the verified blake3 blocks of files still downloading. Bytes that
  cover a block this node does not hold are ``404`` with code ``block_not_held`` (not
  416, which a client reads as "past the end of the file").
- ``GET ...{path}?have``: ``{"block_size": N, "size": S, "have": "<base64 bitmap>"}``,
  bit ``i`` for block ``i``, MSB-first per byte (:mod:`accel.blockmap`).
- ``GET /healthz``: open, for probes.

Every other request needs ``Authorization: Bearer <fleet token>`` when a token is set
(401 otherwise). ``upload_limit`` caps the bytes per second all transfers send together
(one token bucket, :class:`~accel.fetch.ratelimit.TokenBucket`); ``max_clients`` caps
the transfers (GETs with a body) running at once: past it, 503 with ``Retry-After``. A
version removed while a peer reads it: the transfer goes on from the open descriptor
(the file is unlinked, never overwritten), and new requests get 404 because the
registry no longer lists it. Never writes to the models dir.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from accel import blockmap
from accel.errors import UnsafePathError
from accel.fetch.ratelimit import TokenBucket
from accel.node.holdings import HeldFile, Holdings
from accel.serving.bearer import bearer_matches
from accel.serving.files import NOT_FOUND_FILE, FileSender, OpenedFile, etag_of, open_inside
from accel.serving.paths import split_raw_path
from accel.serving.problem import Problem

__all__ = ["BLOCK_NOT_HELD", "PeerServer", "PeerServerConfig", "UploadBudget"]

log = logging.getLogger("accel.node.peers")

#: the error code of a range that covers a block this peer does not hold
BLOCK_NOT_HELD = "block_not_held"
_PREFIX = "/storage/models/"
_NO_STORE = {"Cache-Control": "no-store"}
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class PeerServerConfig:
    """How the peer server serves: its fleet token, upload cap and transfer cap."""

    token: str | None = None
    #: bytes per second sent to all peers together (None: no cap)
    upload_limit: float | None = None
    #: transfers at once; past it, 503 with Retry-After
    max_clients: int = 32
    #: threads for the blocking part of sendfile (each running transfer may use one)
    send_threads: int = 64

    def __post_init__(self) -> None:
        if self.max_clients < 1:
            raise ValueError("max_clients must be >= 1")
        if self.upload_limit is not None and self.upload_limit <= 0:
            raise ValueError("upload_limit must be > 0")


class UploadBudget:
    """One token bucket for every transfer of the peer server (one event loop)."""

    def __init__(self, rate: float) -> None:
        self.bucket = TokenBucket.for_rate(rate)
        self._tat = 0.0

    async def take(self, nbytes: int) -> None:
        """Return once ``nbytes`` more may be sent (debt is paid by waiting)."""
        self._tat, delay = self.bucket.consume(self._tat, time.monotonic(), nbytes)
        if delay > 0:
            await asyncio.sleep(delay)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message, "status": status}})
    extra = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
    return web.Response(status=status, text=body, content_type="application/json", headers=extra)


class PeerServer:
    """The peer server of one models dir; :meth:`app` is its aiohttp application."""

    def __init__(self, holdings: Holdings, config: PeerServerConfig = PeerServerConfig()) -> None:
        self.holdings = holdings
        self.config = config
        self._tokens = (config.token.encode(),) if config.token else ()
        self._files = FileSender(config.send_threads)
        self._budget = UploadBudget(config.upload_limit) if config.upload_limit else None
        self.active = 0  #: transfers running now
        self.refused_busy = 0

    def close(self) -> None:
        self._files.close()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=4096)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/storage/{tail:.*}", self._storage)  # add_get answers HEAD too
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            self._tokens
            and request.path != "/healthz"
            and not bearer_matches(request.headers, self._tokens)
        ):
            return _error(
                401,
                "unauthorized",
                "missing or wrong fleet token (accel node --peer-token)",
                {"WWW-Authenticate": 'Bearer realm="accel-peers"'},
            )
        try:
            return await handler(request)
        except Problem as p:
            return _error(p.status, p.code, p.message, p.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return _error(
                exc.status, _STATUS_CODES.get(exc.status, "http_error"), exc.reason, headers
            )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers=_NO_STORE)

    async def _find(self, raw_path: str) -> HeldFile:
        if not raw_path.startswith(_PREFIX):
            raise Problem(404, "not_found", NOT_FOUND_FILE)
        try:
            segments = split_raw_path(raw_path[len(_PREFIX) :])
        except UnsafePathError:
            raise Problem(400, "bad_path", "the file path is not a clean relative path") from None

        def lookup() -> HeldFile | None:
            named = self.holdings.split_model(segments)
            return None if named is None else self.holdings.find(*named)

        held = await asyncio.to_thread(lookup)
        if held is None:
            raise Problem(404, "not_found", NOT_FOUND_FILE)
        return held

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        held = await self._find(request.raw_path)
        if "have" in request.query:
            body = {
                "block_size": held.block_size,
                "size": held.size,
                "have": blockmap.encode(held.bits),
            }
            return web.json_response(body, headers=_NO_STORE)
        opened = self._open(held)
        try:
            transfer = request.method == "GET"
            if transfer and self.active >= self.config.max_clients:
                self.refused_busy += 1
                raise Problem(
                    503,
                    "busy",
                    f"this peer serves {self.config.max_clients} transfers at once; "
                    "ask another peer or the hub",
                    {"Retry-After": "1"},
                )
            if transfer:
                self.active += 1
            try:
                return await self._files.answer(
                    request,
                    opened,
                    allow=None if held.whole else _holds(held),
                    pace=self._budget.take if self._budget is not None else None,
                )
            finally:
                if transfer:
                    self.active -= 1
        finally:
            opened.close()

    def _open(self, held: HeldFile) -> OpenedFile:
        """The file's descriptor: the final file, or the ``.part`` one still downloading
        (its final name once the download finished meanwhile: same bytes, same blocks)."""
        etag = etag_of(held.sha256)
        names = [held.segments] if held.whole else [held.part_segments, held.segments]
        for segments in names:
            try:
                opened = open_inside(held.base, segments, etag)
            except Problem:
                continue
            if opened.size != held.size:
                opened.close()
                continue
            if held.last_modified is not None:
                opened.mtime = held.last_modified
            return opened
        raise Problem(404, "not_found", NOT_FOUND_FILE)


def _holds(held: HeldFile) -> Callable[[int, int], None]:
    def allow(offset: int, length: int) -> None:
        if not held.holds(offset, length):
            raise Problem(
                404,
                BLOCK_NOT_HELD,
                f"this peer does not hold every block of bytes {offset}-{offset + length - 1} "
                f"of {held.relpath} yet (GET it with ?have to see which it holds)",
            )

    return allow
