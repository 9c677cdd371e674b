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


@pytest.mark.parametrize(
    ("name", "marked_secret"),
    [
        ("Authorization", False),
        ("Cookie", False),
        ("Proxy-Authorization", False),
        ("X-Api-Key", False),
        ("X-Custom-Token", True),
    ],
)
async def test_no_credential_header_crosses_to_another_origin(
    servers: tuple[str, Seen, bytes], tmp_path: Path, name: str, marked_secret: bool
) -> None:
    url, seen, data = servers
    async with Engine(workers=1, connections=2) as engine:
        result = await engine.download(
            url,
            tmp_path / "f.bin",
            headers={name: "s3cret", "X-Trace": "t1"},
            secret_headers=[name] if marked_secret else [],
            chunk_size=1 << 20,
        )
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert len(seen) >= 4
    assert all(name not in h for h in seen), name
    assert all(h.get("X-Trace") == "t1" for h in seen)  # ordinary headers still go


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, int], bytes]]:
    """A -> A2 (two redirects, two origins) -> B, which serves the file; counts requests,
    and B's signed URLs expire after ``expire_after`` requests of one signature."""
    data = os.urandom(6 * 1024 * 1024 + 7)
    (tmp_path / "f.bin").write_bytes(data)
    hits = {"a": 0, "a2": 0, "b": 0, "b_refused": 0, "sig": 0, "expire_after": 1 << 30}
    uses: dict[str, int] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        hits["b"] += 1
        sig = request.query.get("sig", "")
        uses[sig] = uses.get(sig, 0) + 1
        if uses[sig] > hits["expire_after"]:
            hits["b_refused"] += 1
            raise web.HTTPForbidden(text="signature expired")
        return web.FileResponse(tmp_path / "f.bin")

    b = web.Application()
    b.router.add_get("/signed/f.bin", serve)
    async with serve_app(b) as url_b:

        async def sign(request: web.Request) -> web.StreamResponse:
            hits["a2"] += 1
            hits["sig"] += 1
            raise web.HTTPTemporaryRedirect(f"{url_b}/signed/f.bin?sig={hits['sig']}")

        a2 = web.Application()
        a2.router.add_get("/f.bin", sign)
        async with serve_app(a2) as url_a2:

            async def first(request: web.Request) -> web.StreamResponse:
                hits["a"] += 1
                raise web.HTTPFound(f"{url_a2}/f.bin")

            a = web.Application()
            a.router.add_get("/f.bin", first)
            async with serve_app(a) as url_a:
                yield f"{url_a}/f.bin", hits, data


async def test_redirects_are_resolved_once_per_download(
    chain: tuple[str, dict[str, int], bytes], tmp_path: Path
) -> None:
    url, hits, data = chain
    async with Engine(workers=1, connections=4) as engine:
        result = await engine.download(url, tmp_path / "f.bin", chunk_size=1 << 20)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert hits["b"] >= 7  # one request per chunk reached the file
    assert hits["a"] == 1 and hits["a2"] == 1  # the chain was followed once, not per chunk


async def test_an_expired_signed_url_sends_the_download_back_to_its_url(
    chain: tuple[str, dict[str, int], bytes], tmp_path: Path
) -> None:
    """Each signature serves 2 requests, then 403: the download resolves the URL again
    (more often than its attempt budget: the budget counts refusals in a row) and goes
    on, keeping the chunks it has (as with an expired presigned S3 URL)."""
    url, hits, data = chain
    hits["expire_after"] = 2
    async with Engine(workers=1, connections=2, max_attempts=2) as engine:
        result = await engine.download(url, tmp_path / "f.bin", chunk_size=1 << 20)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert hits["b_refused"] >= 2 and hits["a"] >= 3, hits  # expired, then resolved again
    served = hits["b"] - hits["b_refused"]
    assert served <= 7 + 2  # finished chunks were kept: no chunk fetched twice over
