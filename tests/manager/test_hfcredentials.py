"""Each credential reaches only the server it was given for: the hub's token never goes to
an HF endpoint (with or without ``HF_TOKEN``), and ``HF_TOKEN`` never goes to the hub.

Two real hubs on loopback, one as the manager's hub (``--token``) and one as the HF
endpoint, each behind a recording reverse proxy (below) that keeps the headers of
every request it forwards: what a server got is read there, not inferred.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from accel.manager import ModelManager
from accel.manager.credentials import OriginToken, origin_of
from tests.support.hub import publish_model, running_hub
from tests.support.webapp import serve_app

MiB = 1 << 20
SPEC: dict[str, int | bytes] = {"model.safetensors": 2 * MiB + 7, "config.json": b'{"a": 1}'}
HUB_SECRET = "hub-secret-0123"
HF_SECRET = "hf-secret-4567"
_HOP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}
)


@dataclass
class Seen:
    """The requests a recording proxy forwarded: (method, path, headers)."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def carrying(self, secret: str) -> list[tuple[str, str]]:
        """The requests with ``secret`` in any header value."""
        return [(m, p) for m, p, h in self.requests if any(secret in v for v in h.values())]

    def paths(self, part: str) -> list[str]:
        return [p for _, p, _ in self.requests if part in p]


@contextlib.asynccontextmanager
async def recording_proxy(upstream: str) -> AsyncIterator[tuple[str, Seen]]:
    """A reverse proxy on loopback in front of ``upstream`` that records request headers.

    Forwards method, path, query and headers as they came (no redirect followed, no
    decompression), and streams the answer back with its status and headers.
    """
    seen = Seen()
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.requests.append((request.method, request.raw_path, dict(request.headers)))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with session.request(
            request.method,
            upstream + request.raw_path,
            headers=headers,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        ) as up:
            out = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in _HOP or k.lower() == "content-length":
                    out.headers.add(k, v)
            await out.prepare(request)
            async for piece in up.content.iter_chunked(1 << 16):
                await out.write(piece)
            await out.write_eof()
            return out

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    try:
        async with serve_app(app) as url:
            yield url, seen
    finally:
        await session.close()


def test_a_token_is_for_its_origin_only() -> None:
    tok = OriginToken("http://127.0.0.1:8000/base", "t")
    assert tok.headers_for("http://127.0.0.1:8000/other/x") == {"Authorization": "Bearer t"}
    assert tok.headers == {"Authorization": "Bearer t"}
    for other in (
        "http://127.0.0.1:8001/x",  # another port
        "https://127.0.0.1:8000/x",  # another scheme
        "http://localhost:8000/x",  # another host name
        "/relative",
        "ftp://127.0.0.1:8000/x",
        "http://127.0.0.1:bad/x",
    ):
        assert tok.headers_for(other) == {}, other
    assert OriginToken("http://h", None).headers_for("http://h/x") == {}
    assert OriginToken(None, "t").headers == {}
    assert origin_of("HTTP://Example.ORG/a") == ("http", "example.org", 80)
    assert origin_of("https://example.org:443/") == origin_of("https://example.org/")


@pytest.mark.parametrize("hf_token", [None, HF_SECRET])
async def test_the_hub_token_never_reaches_the_hf_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hf_token: str | None
) -> None:
    for name in ("HF_TOKEN", "HF_ENDPOINT", "ACCEL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    hub_root, hf_root = tmp_path / "hub", tmp_path / "hf"
    publish_model(hub_root, "org/ours", "1.0", SPEC)
    publish_model(hub_root, "org/ours", "2.0", {"config.json": b'{"a": 2}'})
    publish_model(hf_root, "org/theirs", "1.0", {**SPEC, "config.json": b'{"b": 2}'}, seed=1)
    with (
        running_hub(hub_root, token=HUB_SECRET) as hub,
        running_hub(hf_root, token=hf_token) as hf,
    ):
        async with (
            recording_proxy(hub.url) as (hub_url, at_hub),
            recording_proxy(hf.url) as (hf_url, at_hf),
            ModelManager(
                tmp_path / "models",
                hub_url,
                token=HUB_SECRET,
                hf_endpoint=hf_url,
                hf_token=hf_token,
                workers=1,
            ) as mm,
        ):
            # The hub's install first: the download engine starts with it.
            ours = await mm.ainstall("org/ours", "1.0")
            theirs = await mm.ainstall("hf://org/theirs@1.0")
            later = await mm.ainstall("org/ours", "2.0")  # the hub's again, after
    assert ours is not None and later is not None and theirs is not None
    assert (theirs / "config.json").read_bytes() == b'{"b": 2}'
    # The HF endpoint was asked for the revision and served both files ...
    assert at_hf.paths("/revision/1.0") and len(at_hf.paths("/resolve/")) >= 2
    assert len(at_hf.paths("/storage/")) >= 2
    # ... and never saw the hub's token, in any header of any request.
    assert at_hf.carrying(HUB_SECRET) == []
    if hf_token is not None:  # its own token on every request it got
        assert at_hf.carrying(hf_token) and len(at_hf.carrying(hf_token)) == len(at_hf.requests)
    # The hub got its token on every request (its downloads too), and never HF_TOKEN.
    assert len(at_hub.paths("/storage/")) >= 3
    assert len(at_hub.carrying(HUB_SECRET)) == len(at_hub.requests)
    assert at_hub.carrying(HF_SECRET) == []
