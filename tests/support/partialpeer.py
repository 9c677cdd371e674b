"""A peer holding some blocks of one file, for engine tests: the node listener's protocol
(``accel node --serve-peers``) on 127.0.0.1, small enough to hold the blocks it holds
under a test's control.

- ``GET {path}?have``: ``{"block_size", "size", "have"}`` (MSB-first base64 bitmap of
  :attr:`PartialPeer.claimed`, which is what it *says* it holds; by default what it holds);
- ``GET {path}`` with a single ``Range``: 206 when every block the range touches is in
  :attr:`PartialPeer.held`, else ``404`` with problem code ``block_not_held``; ``ETag`` is
  the file's sha256 (quoted), as a peer's is;
- a Bearer token is required when given (401 otherwise).

It counts requests and body bytes by kind. It is test infrastructure: the real listener
is accel/node's; this one lets a test say exactly which blocks a peer has at any moment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field

from aiohttp import web

from accel.fetch.sources_have import Have, encode_have

__all__ = ["PartialPeer"]


@dataclass
class PartialPeer:
    data: bytes
    block_size: int
    path: str = "/storage/models/m/1/f.bin"
    token: str | None = None
    held: set[int] = field(default_factory=set)
    #: what ``?have`` says (None: :attr:`held`); a lying bitmap is a set that differs
    claimed: set[int] | None = None
    have_asks: int = 0
    ranges: int = 0
    not_held: int = 0
    unauthorized: int = 0
    body_bytes: int = 0
    #: requests that carried a Cookie (a hub's credential a peer must never see)
    cookies: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.etag = f'"{hashlib.sha256(self.data).hexdigest()}"'
        self.lock = threading.Lock()

    @property
    def nblocks(self) -> int:
        return -(-len(self.data) // self.block_size)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def hold(self, blocks: set[int] | range) -> None:
        with self.lock:
            self.held = set(blocks)

    # --- serving -----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "Cookie" in request.headers:
            self.cookies += 1
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            self.unauthorized += 1
            return _problem(401, "unauthorized", "fleet token needed")
        if request.path != self.path:
            return _problem(404, "not_found", "no such file")
        with self.lock:
            held = set(self.held)
            claimed = set(self.claimed) if self.claimed is not None else held
        if "have" in request.query:
            self.have_asks += 1
            body = {
                "block_size": self.block_size,
                "size": len(self.data),
                "have": encode_have(Have.of(claimed), self.nblocks),
            }
            return web.json_response(body, headers={"Cache-Control": "no-store"})
        rng = request.headers.get("Range", "")
        if not rng.startswith("bytes=") or "," in rng:
            return _problem(400, "bad_request", "a peer serves single ranges only")
        first_s, _, last_s = rng[6:].partition("-")
        first = int(first_s)
        last = min(int(last_s), len(self.data) - 1) if last_s else len(self.data) - 1
        blocks = range(first // self.block_size, last // self.block_size + 1)
        if any(b not in held for b in blocks):
            self.not_held += 1
            return _problem(404, "block_not_held", "this peer does not hold that block yet")
        self.ranges += 1
        part = self.data[first : last + 1]
        self.body_bytes += len(part)
        return web.Response(
            status=206,
            body=part,
            headers={
                "Content-Range": f"bytes {first}-{last}/{len(self.data)}",
                "ETag": self.etag,
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            },
        )

    # --- life --------------------------------------------------------------------------
    def start(self) -> PartialPeer:
        self._thread = threading.Thread(target=self._run, name="partial-peer", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the partial peer did not start")
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> PartialPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _problem(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "status": status}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
