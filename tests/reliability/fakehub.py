"""A tiny hostile hub: aiohttp on 127.0.0.1 serving whatever manifest a test dictates.

The real hub never publishes a manifest naming ``../x``; a compromised or buggy one
might. This fake serves the hub API shapes (``/api/models/{id}``, the manifest,
``/storage/...`` with Range) from raw dicts, so a test can hand the client exactly the
lie it wants to check, and it records every storage request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import blake3
from aiohttp import web

BLOCK = 1024 * 1024


@dataclass
class FakeFile:
    """A file as the fake hub describes it and as it serves it (may disagree on purpose)."""

    path: str
    data: bytes
    size: int | None = None  # what the manifest claims; None = the truth
    sha256: str | None = None

    def entry(self) -> dict[str, Any]:
        digests = [
            blake3.blake3(self.data[i : i + BLOCK]).hexdigest()
            for i in range(0, max(len(self.data), 1), BLOCK)
        ]
        return {
            "path": self.path,
            "size_bytes": len(self.data) if self.size is None else self.size,
            "sha256": self.sha256 or hashlib.sha256(self.data).hexdigest(),
            "chunks": {"algo": "blake3", "size": BLOCK, "digests": digests},
        }


@dataclass
class FakeHub:
    """``async with FakeHub(model_id, version, files) as hub: hub.url``."""

    model_id: str
    version: str
    files: list[FakeFile]
    storage_requests: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manifest(self) -> dict[str, Any]:
        entries = [f.entry() for f in self.files]
        lines = sorted(f"{e['path']}\0{e['size_bytes']}\0{e['sha256']}\n" for e in entries)
        return {
            "model_id": self.model_id,
            "version": self.version,
            "size_bytes": sum(e["size_bytes"] for e in entries),
            "files": entries,
            "checksum_sha256": hashlib.sha256("".join(lines).encode()).hexdigest(),
            "updated_at": "2026-01-01T00:00:00Z",
        }

    def model(self) -> dict[str, Any]:
        m = self.manifest()
        version = {k: m[k] for k in ("version", "size_bytes", "checksum_sha256", "updated_at")}
        version["files"] = [{k: e[k] for k in ("path", "size_bytes", "sha256")} for e in m["files"]]
        return {
            "id": self.model_id,
            "name": self.model_id,
            "versions": [version],
            "default_version": self.version,
            "task": "asr",
            "languages": ["zh"],
        }

    async def _model(self, request: web.Request) -> web.Response:
        return web.json_response(self.model())

    async def _manifest(self, request: web.Request) -> web.Response:
        return web.json_response(self.manifest())

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?")[0]
        prefix = f"/storage/models/{self.model_id}/{self.version}/"
        self.storage_requests.append(raw)
        rel = raw[len(prefix) :] if raw.startswith(prefix) else None
        match = [f for f in self.files if f.path == rel]
        if not match:
            return web.json_response(
                {"error": {"code": "not_found", "message": "no such file", "status": 404}},
                status=404,
            )
        data = match[0].data
        headers = {"ETag": '"fake-' + hashlib.sha256(data).hexdigest()[:16] + '"'}
        headers["Accept-Ranges"] = "bytes"
        rng = request.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a or 0), int(b) if b else len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return web.Response(status=416, headers=headers)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return web.Response(status=206, body=data[start : end + 1], headers=headers)
        return web.Response(body=data, headers=headers)

    async def __aenter__(self) -> FakeHub:
        app = web.Application()
        app.router.add_get("/api/models/{model_id}", self._model)
        app.router.add_get("/api/models/{model_id}/versions/{version}/manifest", self._manifest)
        app.router.add_route("*", "/storage/{tail:.*}", self._storage)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
