"""Redirects: followed, but Authorization never leaves for another origin."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from accel.fetch import Engine
from tests.support.webapp import serve_app

Seen = list[dict[str, str]]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[str, Seen, bytes]]:
    """A (redirects everything) -> B (another port: another origin, serves the file)."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "f.bin").write_bytes(data)
    seen: Seen = []

    async def serve(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        return web.FileResponse(tmp_path / "f.bin")

    b = web.Application()
    b.router.add_get("/f.bin", serve)
    async with serve_app(b) as url_b:

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{url_b}/f.bin")

        a = web.Application()
        a.router.add_get("/f.bin", redirect)
        async with serve_app(a) as url_a:
            yield f"{url_a}/f.bin", seen, data


async def test_redirect_to_another_origin_drops_authorization(
    servers: tuple[str, Seen, bytes], tmp_path: Path
) -> None:
    url, seen, data = servers
    dest = tmp_path / "out" / "f.bin"
    async with Engine(workers=1, connections=2) as engine:
        result = await engine.download(
            url, dest, headers={"Authorization": "Bearer s3cret"}, chunk_size=1 << 20
        )
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert len(seen) >= 4  # the probe and the chunks all reached B
    assert all("Authorization" not in h for h in seen)
    assert all(h.get("Accept-Encoding") == "identity" for h in seen)
    assert dest.name == "f.bin"  # the local name never comes from the redirect
