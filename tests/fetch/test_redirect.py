"""Redirects: followed, but Authorization never leaves for another origin."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from accel.fetch import Engine

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
    runner_b = web.AppRunner(b)
    await runner_b.setup()
    site_b = web.TCPSite(runner_b, "127.0.0.1", 0)
    await site_b.start()
    port_b = site_b._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"http://127.0.0.1:{port_b}/f.bin")

    a = web.Application()
    a.router.add_get("/f.bin", redirect)
    runner_a = web.AppRunner(a)
    await runner_a.setup()
    site_a = web.TCPSite(runner_a, "127.0.0.1", 0)
    await site_a.start()
    port_a = site_a._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port_a}/f.bin", seen, data
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()


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
