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
            for i in range(0, len(self.data), BLOCK)
        ]
        return {
            "path": self.path,
            "size_bytes": len(self.data) if self.size is None else self.size,
            "sha256": self.sha256 or hashlib.sha256(self.data).hexdigest(),
            "chunks": {"algo": "blake3", "size": BLOCK, "digests": digests},
        }


def _not_found() -> web.Response:
    return web.json_response(
        {"error": {"code": "not_found", "message": "no such model or file", "status": 404}},
        status=404,
    )


@dataclass
class FakeHub:
    """``async with FakeHub(model_id, version, files) as hub: hub.url``.

    ``more`` adds other (model_id, version, files) triples; a model's default version is
    the last one listed for it.
    """

    model_id: str
    version: str
    files: list[FakeFile]
    more: list[tuple[str, str, list[FakeFile]]] = field(default_factory=list)
    storage_requests: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _catalog(self) -> list[tuple[str, str, list[FakeFile]]]:
        return [(self.model_id, self.version, self.files), *self.more]

    def _files(self, model_id: str, version: str) -> list[FakeFile] | None:
        for m, v, files in self._catalog():
            if m == model_id and v == version:
                return files
        return None

    def manifest(self, model_id: str | None = None, version: str | None = None) -> dict[str, Any]:
        model_id, version = model_id or self.model_id, version or self.version
        files = self._files(model_id, version) or []
        entries = [f.entry() for f in files]
        lines = sorted(f"{e['path']}\0{e['size_bytes']}\0{e['sha256']}\n" for e in entries)
        return {
            "model_id": model_id,
            "version": version,
            "size_bytes": sum(e["size_bytes"] for e in entries),
            "files": entries,
            "checksum_sha256": hashlib.sha256("".join(lines).encode()).hexdigest(),
            "updated_at": "2026-01-01T00:00:00Z",
        }

    def model(self, model_id: str | None = None) -> dict[str, Any] | None:
        model_id = model_id or self.model_id
        versions = []
        for m, v, _ in self._catalog():
            if m != model_id:
                continue
            man = self.manifest(m, v)
            info = {k: man[k] for k in ("version", "size_bytes", "checksum_sha256", "updated_at")}
            info["files"] = [
                {k: e[k] for k in ("path", "size_bytes", "sha256")} for e in man["files"]
            ]
            versions.append(info)
        if not versions:
            return None
        return {
            "id": model_id,
            "name": model_id,
            "versions": versions,
            "default_version": versions[-1]["version"],
            "task": "asr",
            "languages": ["zh"],
        }

    async def _model(self, request: web.Request) -> web.Response:
        body = self.model(request.match_info["model_id"])
        return _not_found() if body is None else web.json_response(body)

    async def _manifest(self, request: web.Request) -> web.Response:
        m, v = request.match_info["model_id"], request.match_info["version"]
        if self._files(m, v) is None:
            return _not_found()
        return web.json_response(self.manifest(m, v))

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?")[0]
        self.storage_requests.append(raw)
        match: list[FakeFile] = []
        for m, v, files in self._catalog():
            prefix = f"/storage/models/{m}/{v}/"
            if raw.startswith(prefix):
                match = [f for f in files if f.path == raw[len(prefix) :]]
                break
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
