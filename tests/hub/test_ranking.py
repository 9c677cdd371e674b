"""Usage ranking on a real hub: 1,000 concurrent reports exact, order, persistence across restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from tests.hub.test_api import call
from tests.support.hub import publish_model, running_hub


async def _report_many(url: str, plan: dict[str, int]) -> list[int]:
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(model_id: str) -> int:
            async with session.post(f"{url}/api/model-usage", json={"model_id": model_id}) as r:
                await r.read()
                return r.status

        jobs = [one(m) for m, n in plan.items() for _ in range(n)]
        return await asyncio.gather(*jobs)


def test_ranking_exact_under_concurrency_and_persistent(tmp_path: Path) -> None:
    root = tmp_path / "store"
    for model_id in ("alpha", "beta", "gamma", "delta"):
        publish_model(root, model_id, "1.0", {"w.bin": 100})
    # 1,000 reports in all; beta and gamma tie (broken by id), delta never requested.
    plan = {"alpha": 250, "beta": 300, "gamma": 300, "delta": 0, "zeta": 0}
    plan["alpha"] += 150
    with running_hub(root) as hub:
        statuses = asyncio.run(_report_many(hub.url, plan))
        assert len(statuses) == 1000 and set(statuses) == {200}
        # Manifest fetches count too: one install request each.
        for _ in range(2):
            assert call(f"{hub.url}/api/models/delta/versions/1.0/manifest")[0] == 200
        expected = [
            {"model_id": "alpha", "request_count": 400, "rank": 1},
            {"model_id": "beta", "request_count": 300, "rank": 2},
            {"model_id": "gamma", "request_count": 300, "rank": 3},
            {"model_id": "delta", "request_count": 2, "rank": 4},
        ]
        assert json.loads(call(f"{hub.url}/api/model-usage/ranking")[2]) == expected
        hub.restart()
        assert json.loads(call(f"{hub.url}/api/model-usage/ranking")[2]) == expected
        assert json.loads(call(f"{hub.url}/api/model-usage/ranking?limit=2")[2]) == expected[:2]
