"""``accel serve --workers 2``: one port, two processes, exact counts, clean stop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psutil

from tests.hub.test_api import call
from tests.support.hub import publish_model, running_hub


def test_two_workers_share_the_port_and_the_counts(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "a", "1.0", {"w.bin": 300_000})
    publish_model(root, "b", "1.0", {"w.bin": 100})
    with running_hub(root, extra_args=["--workers", "2"], token="tok") as hub:
        parent = psutil.Process(hub.proc.pid)
        workers = parent.children()
        assert len(workers) == 2
        # Both workers listen on the hub's port.
        for w in workers:
            ports = {c.laddr.port for c in w.net_connections(kind="tcp") if c.status == "LISTEN"}
            assert hub.port in ports
        auth = {"Authorization": "Bearer tok"}
        assert call(hub.url + "/api/models")[0] == 401  # children got the token
        status, _, body = call(
            hub.file_url("a", "1.0", "w.bin"), headers=auth | {"Range": "bytes=0-9"}
        )
        assert status == 206 and len(body) == 10

        async def report() -> list[int]:
            import aiohttp

            async with aiohttp.ClientSession(headers=auth) as s:

                async def one(m: str) -> int:
                    # a new connection each time, so the kernel spreads them over workers
                    async with s.post(f"{hub.url}/api/model-usage", json={"model_id": m},
                                      headers={"Connection": "close"}) as r:  # fmt: skip
                        await r.read()
                        return r.status

                return await asyncio.gather(*(one("a" if i % 3 else "b") for i in range(600)))

        assert set(asyncio.run(report())) == {200}
        ranking = json.loads(call(hub.url + "/api/model-usage/ranking", headers=auth)[2])
        assert [(e["model_id"], e["request_count"]) for e in ranking] == [("a", 400), ("b", 200)]
        hub.stop()
        assert hub.proc.returncode == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
