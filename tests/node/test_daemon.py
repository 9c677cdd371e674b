"""The daemon in-process over the fake manager seam: control API, SSE, guard, preseed.

The hub side is a minimal aiohttp app with the hub's ranking and catalog shapes; the real
hub and the real ModelManager are exercised in test_node_process.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from accel.node.daemon import NodeConfig, NodeDaemon
from tests.node.fakes import FakeManager
from tests.node.scheduler import Scheduler
from tests.support.webapp import serve_app

RANKING = [
    {"model_id": "mt-small", "request_count": 9, "rank": 1},
    {"model_id": "asr-big", "request_count": 4, "rank": 2},
    {"model_id": "tts", "request_count": 1, "rank": 3},
]


def _model(mid: str, size: int) -> dict[str, Any]:
    return {
        "id": mid,
        "name": mid.upper(),
        "task": "mt",
        "languages": ["zh"],
        "default_version": "1.0",
        "versions": [
            {
                "version": "1.0",
                "size_bytes": size,
                "files": [],
                "checksum_sha256": "0" * 64,
                "updated_at": "2026-01-01T00:00:00Z",
            }
        ],
    }


@pytest.fixture
async def mini_hub() -> AsyncIterator[str]:
    async def ranking(r: web.Request) -> web.Response:
        return web.json_response(RANKING[: int(r.query.get("limit", 10))])

    async def models(r: web.Request) -> web.Response:
        sizes = {"mt-small": 1000, "asr-big": 5000, "tts": 300, "never-asked": 10}
        return web.json_response([_model(m, n) for m, n in sizes.items()])

    app = web.Application()
    app.router.add_get("/api/model-usage/ranking", ranking)
    app.router.add_get("/api/models", models)
    async with serve_app(app) as url:
        yield url


async def _daemon(tmp: Path, hub: str, **kw: Any) -> tuple[NodeDaemon, FakeManager]:
    fake = FakeManager(tmp, sizes={"mt-small": 1000, "asr-big": 5000, "tts": 300})
    cfg = NodeConfig(models_dir=tmp, hub_url=hub, port=0, node_id="node-t", **kw)
    d = NodeDaemon(cfg, manager_factory=lambda c: fake)
    await d.start()
    return d, fake


async def _sse(
    session: aiohttp.ClientSession, url: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async with session.get(url + "/events") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        name = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                yield name, json.loads(line[6:])
                name = None


async def test_control_api_install_progress_ready_over_sse(tmp_path: Path, mini_hub: str) -> None:
    d, fake = await _daemon(tmp_path, mini_hub)
    assert d.url
    try:
        async with aiohttp.ClientSession() as s:
            stream = _sse(s, d.url)
            name, snap = await anext(stream)
            assert name == "snapshot" and snap["cards"] == []
            r = await s.post(d.url + "/api/install", json={"model_id": "tts", "priority": 3})
            assert r.status == 202
            seen: list[str] = []
            progress: list[float] = []
            async with asyncio.timeout(10):
                async for name, data in stream:
                    seen.append(name)
                    if name == "progress":
                        progress.append(data["card"]["done"])
                        assert data["card"]["total"] == 300
                    if name == "ready":
                        assert data["path"].endswith("tts/1.0")
                        assert data["card"]["state"] == "ready"
                        break
            assert progress == sorted(progress) and len(progress) >= 3
            state = await (await s.get(d.url + "/api/state")).json()
            (card,) = state["cards"]
            assert card["state"] == "ready" and card["done"] == 300
            assert state["node_id"] == "node-t"
    finally:
        await d.stop()
    assert fake.closed


async def test_pause_resume_retry_remove_and_errors(tmp_path: Path, mini_hub: str) -> None:
    d, fake = await _daemon(tmp_path, mini_hub)
    fake.fail.add("asr-big")
    assert d.url
    try:
        async with aiohttp.ClientSession() as s:
            await s.post(d.url + "/api/install", json={"model_id": "asr-big"})
            await s.post(d.url + "/api/install", json={"model_id": "mt-small"})
            async with asyncio.timeout(10):  # pause an install that is under way
                while fake.records[("mt-small", "1.0")]["bytes_done"] == 0:
                    await asyncio.sleep(0.01)
            r = await s.post(d.url + "/api/pause", json={"model_id": "mt-small"})
            assert r.status == 200
            cards = {
                c["model_id"]: c
                for c in (await (await s.get(d.url + "/api/state")).json())["cards"]
            }
            assert cards["mt-small"]["state"] == "paused"
            async with asyncio.timeout(10):
                while fake.records[("asr-big", "1.0")]["state"] != "error":
                    await asyncio.sleep(0.05)
            await d.refresh_cards(publish=False)
            err = d.cards["asr-big@1.0"]["error"]
            assert err["title"] == "Checksum mismatch" and "Retry" in err["advice"]
            for action, mid in (("resume", "mt-small"), ("retry", "asr-big")):
                r = await s.post(d.url + f"/api/{action}", json={"model_id": mid})
                assert r.status == 200, await r.text()
            async with asyncio.timeout(10):
                while {r["state"] for r in fake.records.values()} != {"ready"}:
                    await asyncio.sleep(0.05)
            r = await s.post(d.url + "/api/remove", json={"model_id": "mt-small"})
            assert r.status == 200
            assert ("mt-small", "1.0") not in fake.records
            # bad requests get the JSON error body
            r = await s.post(d.url + "/api/install", json={"version": "1"})
            body = await r.json()
            assert r.status == 400 and body["error"]["code"] == "usage_error"
            r = await s.post(
                d.url + "/api/install",
                data="model_id=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert r.status == 400
            r = await s.post(d.url + "/api/priority", json={"model_id": "x", "priority": "high"})
            assert r.status == 400
            # a manager bug (the fake's KeyError) still answers in the API's error shape
            r = await s.post(d.url + "/api/pause", json={"model_id": "ghost"})
            assert r.status == 500 and (await r.json())["error"]["code"] == "internal_error"
            # DNS rebinding: a page on another name that resolves to 127.0.0.1
            r = await s.post(
                d.url + "/api/install",
                json={"model_id": "tts"},
                headers={"Host": "evil.example:8700"},
            )
            assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden_host"
            r = await s.get(d.url + "/api/state", headers={"Host": "localhost"})
            assert r.status == 200
            r = await s.get(d.url + "/api/nope")
            assert r.status == 404 and (await r.json())["error"]["status"] == 404
    finally:
        await d.stop()


async def test_job_guard_endpoint_reports_to_scheduler(tmp_path: Path, mini_hub: str) -> None:
    async with Scheduler() as sched:
        d, fake = await _daemon(tmp_path, mini_hub, scheduler_url=sched.ws_url)
        assert d.url
        try:
            async with aiohttp.ClientSession() as s:
                job = {
                    "job_id": "job-1",
                    "required_model_id": "tts",
                    "required_model_version": "1.0",
                }
                r = await s.post(d.url + "/api/jobs", json=job)
                assert r.status == 409
                report = (await r.json())["report"]
                assert report["reason"] == "not_installed" and report["install_queued"]
                (got,) = await sched.wait_for(1)
                assert got.job_id == "job-1" and got.node_id == "node-t"
                async with asyncio.timeout(10):
                    while fake.records[("tts", "1.0")]["state"] != "ready":
                        await asyncio.sleep(0.05)
                r = await s.post(d.url + "/api/jobs", json={**job, "job_id": "job-2"})
                assert r.status == 200
                assert (await r.json())["path"].endswith("tts/1.0")
                r = await s.post(d.url + "/api/jobs", json={"job_id": "x"})
                assert r.status == 400
        finally:
            await d.stop()


async def test_preseed_top_n_at_start_and_ranking_view(tmp_path: Path, mini_hub: str) -> None:
    d, fake = await _daemon(tmp_path, mini_hub, preseed_top=2, preseed_interval_s=60)
    assert d.url
    try:
        async with asyncio.timeout(5):
            while len(fake.records) < 2:
                await asyncio.sleep(0.02)
        assert {k[0] for k in fake.records} == {"mt-small", "asr-big"}
        async with aiohttp.ClientSession() as s:
            rows = await (await s.get(d.url + "/api/ranking?limit=10")).json()
            assert [r["model_id"] for r in rows] == ["mt-small", "asr-big", "tts", "never-asked"]
            assert rows[0]["local_state"] in ("queued", "downloading", "ready")
            assert rows[2]["local_state"] == "not_installed" and rows[2]["size_bytes"] == 300
            # a second round queues nothing new: everything on top is present
            r = await s.post(d.url + "/api/preseed", json={})
            assert (await r.json())["started"] == []
            page = await (await s.get(d.url + "/")).text()
            assert "<title>accel node</title>" in page
            assert (await s.get(d.url + "/static/app.js")).status == 200
            assert (await s.get(d.url + "/static/..%2fapi.py")).status == 404
    finally:
        await d.stop()


async def test_preseed_runs_again_on_its_interval(tmp_path: Path) -> None:
    """A model that climbs into the hub's top N is pre-seeded by the next round on its
    own, without a restart or a POST /api/preseed."""
    ranking = [{"model_id": "mt-small", "request_count": 9, "rank": 1}]
    asked = []

    async def ranked(r: web.Request) -> web.Response:
        asked.append(r.query.get("limit"))
        return web.json_response(ranking[: int(r.query.get("limit", 10))])

    app = web.Application()
    app.router.add_get("/api/model-usage/ranking", ranked)
    async with serve_app(app) as hub:
        d, fake = await _daemon(tmp_path, hub, preseed_top=1, preseed_interval_s=0.3)
        try:
            async with asyncio.timeout(5):
                while {k[0] for k in fake.records} != {"mt-small"}:
                    await asyncio.sleep(0.02)
            ranking.insert(0, {"model_id": "tts", "request_count": 50, "rank": 1})
            async with asyncio.timeout(5):
                while "tts" not in {k[0] for k in fake.records}:
                    await asyncio.sleep(0.02)
            assert len(asked) >= 2 and set(asked) == {"1"}
            assert d.preseed_status["started"] == ["tts"] and d.preseed_status["error"] is None
        finally:
            await d.stop()


async def test_stop_ends_open_event_streams(tmp_path: Path, mini_hub: str) -> None:
    d, _ = await _daemon(tmp_path, mini_hub)
    assert d.url
    async with aiohttp.ClientSession() as s:
        stream = _sse(s, d.url)
        await anext(stream)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stopper = asyncio.create_task(d.stop())
        names = [name async for name, _ in stream]
        await stopper
        assert names[-1] == "shutdown"
        assert loop.time() - t0 < 5
