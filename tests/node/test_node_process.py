"""`accel node` as a real subprocess over the real ModelManager and a hub subprocess:
control API, /events, the job guard reporting to a real scheduler, SIGTERM leaving
downloads resumable and a restart resuming them, and removal announced to subscribers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from accel.node.client import NodeEvent, follow_events
from tests.node.scheduler import Scheduler
from tests.node.stack import publish, running_hub, running_node
from tests.support.hub import running_hub as running_token_hub

MiB = 1 << 20


async def _post(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with s.post(url, json=body) as r:
        return r.status, await r.json()


async def _until(stream: Any, pred: Any, timeout_s: float = 60) -> NodeEvent:
    async with asyncio.timeout(timeout_s):
        async for ev in stream:
            if pred(ev):
                return ev  # type: ignore[no-any-return]
    raise AssertionError("stream ended")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "models").mkdir(parents=True)
    publish(
        root, "asr-zh", "1.0", {"model.bin": 24 * MiB, "vocab.json": 40_000, "sub/enc.bin": 6 * MiB}
    )
    publish(root, "mt-zh-en", "2.0", {"weights.bin": 2 * MiB, "spm.model": 300_000})
    return root


async def test_job_guard_report_install_ready_and_remove(tmp_path: Path, store: Path) -> None:
    models = tmp_path / "models"
    async with Scheduler() as sched:
        with (
            running_hub(store) as hub,
            running_node(models, hub.url, "--scheduler", sched.http_url) as node,
        ):
            async with aiohttp.ClientSession() as s:
                events = follow_events(node.url, session=s, reconnect=False)
                first = await anext(events)
                assert first.name == "snapshot" and first.data["cards"] == []
                job = {
                    "job_id": "job-1",
                    "required_model_id": "mt-zh-en",
                    "required_model_version": "2.0",
                }
                status, body = await _post(s, node.url + "/api/jobs", job)
                assert status == 409, body
                assert body["report"]["reason"] == "not_installed"
                assert body["report"]["install_queued"] is True
                (report,) = await sched.wait_for(1, timeout_s=20)
                assert (report.job_id, report.node_id, report.model_id, report.version) == (
                    "job-1",
                    "node-under-test",
                    "mt-zh-en",
                    "2.0",
                )
                assert sched.raw[0]["type"] == "MODEL_NOT_AVAILABLE"

                ready = await _until(events, lambda e: e.name == "ready")
                path = Path(ready.data["path"])
                assert ready.data["model_id"] == "mt-zh-en" and path.is_dir()
                assert (path / "weights.bin").stat().st_size == 2 * MiB
                assert ready.data["card"]["state"] == "ready"

                status, body = await _post(s, node.url + "/api/jobs", {**job, "job_id": "job-2"})
                assert status == 200 and body["path"] == str(path)

                async with s.get(node.url + "/api/state") as r:
                    state = await r.json()
                (rec,) = state["models"]
                assert rec["state"] == "ready" and rec["model_id"] == "mt-zh-en"
                assert state["scheduler"]["delivered"] == 1

                status, _ = await _post(
                    s, node.url + "/api/remove", {"model_id": "mt-zh-en", "version": "2.0"}
                )
                assert status == 200
                removed = await _until(events, lambda e: e.name == "removed")
                assert removed.data["model_id"] == "mt-zh-en"
                assert not path.exists()
                await events.aclose()
            rc = await asyncio.to_thread(node.terminate)
            assert rc == 0, node.log()


async def test_sigterm_leaves_downloads_resumable_and_restart_resumes(
    tmp_path: Path, store: Path
) -> None:
    models = tmp_path / "models"
    size = 24 * MiB + 40_000 + 6 * MiB
    with running_hub(store, count_bytes=True) as hub:
        with running_node(models, hub.url, "--limit-rate", "6M") as node:
            async with aiohttp.ClientSession() as s:
                events = follow_events(node.url, session=s, reconnect=False)
                await anext(events)
                status, _ = await _post(s, node.url + "/api/install", {"model_id": "asr-zh"})
                assert status == 202
                ev = await _until(
                    events, lambda e: e.name == "progress" and e.data["bytes_done"] >= 8 * MiB
                )
                assert ev.data["bytes_total"] == size
                await events.aclose()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            rc = await asyncio.to_thread(node.terminate)
            assert rc == 0, node.log()
            assert loop.time() - t0 < 15
        registry = json.loads((models / "registry.json").read_text())
        rec = registry["installs"]["asr-zh@1.0"]
        assert rec["state"] == "paused" and 0 < rec["bytes_done"] < size
        resume = json.loads((models / ".accel" / "node" / "resume.json").read_text())
        assert resume == [{"model_id": "asr-zh", "version": "1.0"}]
        served_before = hub.storage_bytes()
        assert served_before >= 8 * MiB  # the proxy saw the first run's bytes

        # A restart continues on its own, from the bytes already on disk.
        with running_node(models, hub.url, log_name="node2.log") as node2:
            async with aiohttp.ClientSession() as s:
                events = follow_events(node2.url, session=s, reconnect=False)
                snap = await anext(events)
                assert snap.name == "snapshot"
                ready = await _until(
                    events, lambda e: e.name == "ready" and e.data["model_id"] == "asr-zh"
                )
                await events.aclose()
            assert (Path(ready.data["path"]) / "model.bin").stat().st_size == 24 * MiB
            rc = await asyncio.to_thread(node2.terminate)
            assert rc == 0, node2.log()
        # The second run fetched what was missing, not the whole version again.
        served_after = hub.storage_bytes() - served_before
        assert served_after < size - 4 * MiB, (served_before, served_after)
        assert not (models / ".accel" / "node" / "resume.json").exists()


async def test_paused_install_stays_paused_across_restart(tmp_path: Path, store: Path) -> None:
    models = tmp_path / "models"
    with running_hub(store) as hub:
        with running_node(models, hub.url, "--limit-rate", "4M") as node:
            async with aiohttp.ClientSession() as s:
                events = follow_events(node.url, session=s, reconnect=False)
                await anext(events)
                await _post(s, node.url + "/api/install", {"model_id": "asr-zh"})
                await _until(events, lambda e: e.name == "progress" and e.data["bytes_done"] > 0)
                status, _ = await _post(s, node.url + "/api/pause", {"model_id": "asr-zh"})
                assert status == 200
                await _until(events, lambda e: e.name == "state" and e.data["state"] == "paused")
                await events.aclose()
            assert await asyncio.to_thread(node.terminate) == 0
        with running_node(models, hub.url, log_name="node2.log") as node2:
            async with aiohttp.ClientSession() as s, s.get(node2.url + "/api/state") as r:
                state = await r.json()
            await asyncio.sleep(1.0)
            async with aiohttp.ClientSession() as s, s.get(node2.url + "/api/models") as r:
                (rec,) = await r.json()
            assert rec["state"] == "paused", node2.log()
            assert state["cards"][0]["state"] == "paused"


async def _record(s: aiohttp.ClientSession, node_url: str, model_id: str) -> dict[str, Any]:
    async with s.get(node_url + "/api/models") as r:
        (rec,) = [m for m in await r.json() if m["model_id"] == model_id]
    return rec  # type: ignore[no-any-return]


async def test_priority_of_a_paused_install_shows_and_survives_resume(
    tmp_path: Path, store: Path
) -> None:
    models = tmp_path / "models"
    with running_hub(store) as hub, running_node(models, hub.url, "--limit-rate", "4M") as node:
        async with aiohttp.ClientSession() as s:
            events = follow_events(node.url, session=s, reconnect=False)
            await anext(events)
            await _post(s, node.url + "/api/install", {"model_id": "asr-zh", "priority": 1})
            await _until(events, lambda e: e.name == "progress" and e.data["bytes_done"] > 0)
            await _post(s, node.url + "/api/pause", {"model_id": "asr-zh"})
            await _until(events, lambda e: e.name == "state" and e.data["state"] == "paused")

            status, body = await _post(
                s, node.url + "/api/priority", {"model_id": "asr-zh", "priority": 7}
            )
            assert (status, body["changed"]) == (200, ["asr-zh@1.0"]), body
            rec = await _record(s, node.url, "asr-zh")
            assert (rec["state"], rec["priority"]) == ("paused", 7), rec

            # Resume re-queues with the new priority, and the running install keeps it.
            await _post(s, node.url + "/api/resume", {"model_id": "asr-zh"})
            await _until(events, lambda e: e.name == "progress" and e.data["model_id"] == "asr-zh")
            rec = await _record(s, node.url, "asr-zh")
            assert rec["state"] in ("queued", "downloading") and rec["priority"] == 7, rec

            # Nothing to reprioritize: a clear error, not an "ok" that changed nothing.
            status, body = await _post(s, node.url + "/api/priority", {"model_id": "nope"})
            assert status == 404 and body["error"]["code"] == "not_found", body
            await _post(s, node.url + "/api/install", {"model_id": "mt-zh-en", "version": "2.0"})
            await _until(events, lambda e: e.name == "ready" and e.data["model_id"] == "mt-zh-en")
            status, body = await _post(
                s, node.url + "/api/priority", {"model_id": "mt-zh-en", "priority": 3}
            )
            assert status == 400 and "installed already" in body["error"]["message"], body
            await events.aclose()


async def test_node_with_the_hub_token_installs_and_without_it_says_refused(
    tmp_path: Path, store: Path
) -> None:
    """``accel node --token``: the manager and the hub info both send it; without it the
    hub's 401 comes back as a clear "unauthorized" error, not as an empty ranking."""
    models = tmp_path / "models"
    with running_token_hub(store, token="node-test-token") as hub:
        with running_node(models, hub.url, "--token", "node-test-token") as node:
            async with aiohttp.ClientSession() as s:
                events = follow_events(node.url, session=s, reconnect=False)
                await anext(events)
                status, _ = await _post(s, node.url + "/api/install", {"model_id": "mt-zh-en"})
                assert status == 202
                ready = await _until(
                    events, lambda e: e.name == "ready" and e.data["model_id"] == "mt-zh-en"
                )
                assert (Path(ready.data["path"]) / "weights.bin").stat().st_size == 2 * MiB
                await events.aclose()
                async with s.get(node.url + "/api/ranking?limit=5") as r:
                    assert r.status == 200
                    rows = await r.json()
                ids = {row["model_id"]: row["local_state"] for row in rows}
                assert ids["mt-zh-en"] == "ready" and "asr-zh" in ids, rows
        with running_node(tmp_path / "models2", hub.url, log_name="node2.log") as node2:
            async with aiohttp.ClientSession() as s, s.get(node2.url + "/api/ranking") as r:
                body = await r.json()
            assert r.status == 502 and body["error"]["code"] == "unauthorized", body


async def test_preseed_top_n_and_websocket_reports_with_progress(
    tmp_path: Path, store: Path
) -> None:
    models = tmp_path / "models"
    async with Scheduler() as sched:
        with running_hub(store) as hub:
            # asr-zh is the most requested model, mt-zh-en second.
            async with aiohttp.ClientSession() as s:
                for model_id, uses in (("asr-zh", 2), ("mt-zh-en", 1)):
                    for _ in range(uses):
                        manifest = f"{hub.url}/api/models/{model_id}/versions/"
                        manifest += "1.0/manifest" if model_id == "asr-zh" else "2.0/manifest"
                        async with s.get(manifest) as r:
                            assert r.status == 200
            with running_node(
                models,
                hub.url,
                "--preseed-top",
                "1",
                "--limit-rate",
                "6M",
                "--scheduler",
                sched.ws_url,
            ) as node:
                async with aiohttp.ClientSession() as s:
                    events = follow_events(node.url, session=s, reconnect=False)
                    # The top-1 model is being installed without anyone asking.
                    ev = await _until(
                        events,
                        lambda e: e.name == "progress" and e.data["bytes_done"] > MiB,
                        timeout_s=30,
                    )
                    assert ev.data["model_id"] == "asr-zh"
                    # A job for it now is refused with its progress, and no second install.
                    job = {
                        "job_id": "j-asr",
                        "required_model_id": "asr-zh",
                        "required_model_version": "1.0",
                    }
                    status, body = await _post(s, node.url + "/api/jobs", job)
                    assert status == 409
                    report = body["report"]
                    assert report["reason"] in ("downloading", "queued")
                    assert 0 < report["progress"] < 1 and report["install_queued"] is False
                    (got,) = await sched.wait_for(1, timeout_s=20)
                    assert got.job_id == "j-asr" and got.progress == report["progress"]
                    await events.aclose()
                    async with s.get(node.url + "/api/state") as r:
                        state = await r.json()
                    assert state["preseed"]["started"] == ["asr-zh"]
                    assert [m["model_id"] for m in state["models"]] == ["asr-zh"]
                    assert state["scheduler"]["delivered"] == 1
                # Stop it while this loop still serves the scheduler's websocket close.
                assert await asyncio.to_thread(node.terminate) == 0, node.log()


async def test_kill_9_then_restart_resumes_on_its_own(tmp_path: Path, store: Path) -> None:
    models = tmp_path / "models"
    with running_hub(store) as hub:
        with running_node(models, hub.url, "--limit-rate", "6M") as node:
            async with aiohttp.ClientSession() as s:
                events = follow_events(node.url, session=s, reconnect=False)
                await anext(events)
                await _post(s, node.url + "/api/install", {"model_id": "asr-zh"})
                await _until(
                    events, lambda e: e.name == "progress" and e.data["bytes_done"] >= 6 * MiB
                )
                await events.aclose()
            node.proc.kill()  # no graceful stop: no resume list is written
            node.proc.wait(10)
        assert not (models / ".accel" / "node" / "resume.json").exists()
        with running_node(models, hub.url, log_name="node2.log") as node2:
            async with aiohttp.ClientSession() as s:
                events = follow_events(node2.url, session=s, reconnect=False)
                ready = await _until(events, lambda e: e.name == "ready")
                await events.aclose()
            assert ready.data["model_id"] == "asr-zh"
            assert (Path(ready.data["path"]) / "sub" / "enc.bin").stat().st_size == 6 * MiB
            assert "resuming asr-zh@1.0" in node2.log()
