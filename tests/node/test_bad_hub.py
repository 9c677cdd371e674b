"""Fault: the node daemon (in process, the real ModelManager) over a hub whose answers do
not match the schema (the fake hub of tests/manager/badhub.py, on loopback).

An install queued through the control API (``wait=False``: the API answers 202 before
the manifest is read) must end visibly: within seconds, ``/api/state`` shows the version
``error`` with code ``bad_manifest`` naming the field, and its dashboard card says so.
Before the job runner, the job's task died with the ValidationError and the version
never appeared at all. An install whose catalog answer is malformed is refused by the
API itself, with the same code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from accel.node.daemon import NodeConfig, NodeDaemon
from tests.manager.badhub import MODEL, VERSION, good_manifest, running_bad_hub
from tests.support.lostexc import failing_on_lost_task_exceptions


async def _record(s: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    async with s.get(url + "/api/state") as r:
        state = await r.json()
    for rec in state["models"]:
        if (rec["model_id"], rec["version"]) == (MODEL, VERSION):
            return dict(rec, card=[c for c in state["cards"] if c["model_id"] == MODEL])
    return None


async def test_a_node_api_install_on_a_malformed_hub_shows_the_error_in_status(
    tmp_path: Path,
) -> None:
    with failing_on_lost_task_exceptions():
        async with running_bad_hub(tmp_path / "store") as hub:
            body = good_manifest()
            del body["model_id"]
            hub.answer(body)
            config = NodeConfig(
                models_dir=tmp_path / "models", hub_url=hub.url, port=0, node_id="node-bad"
            )
            daemon = NodeDaemon(config)
            await daemon.start()
            assert daemon.url
            try:
                async with aiohttp.ClientSession() as s:
                    r = await s.post(
                        daemon.url + "/api/install", json={"model_id": MODEL, "version": VERSION}
                    )
                    assert r.status == 202, await r.text()
                    rec = None
                    async with asyncio.timeout(10):
                        while rec is None or rec["state"] != "error":
                            await asyncio.sleep(0.05)
                            rec = await _record(s, daemon.url)
                    assert rec["error"]["code"] == "bad_manifest", rec
                    assert "model_id" in rec["error"]["message"], rec
                    (card,) = rec["card"]
                    assert card["state"] == "error" and card["error"], card

                    # With no version, the catalog is asked first, inside the API call.
                    hub.answer(b"<html><body>hub</body></html>", catalog=True)
                    r = await s.post(daemon.url + "/api/install", json={"model_id": MODEL})
                    answer = await r.json()
                    assert r.status == 502 and answer["error"]["code"] == "bad_manifest", answer
            finally:
                await daemon.stop()
