"""The node part of ``./scripts/demo``: pre-seeding, a refused job, its report, the ready event.

Given a running hub, it starts a dev scheduler (in this process) and ``accel node`` (a
subprocess) over a models dir, then tells the story on stdout: the node pre-seeds the
hub's top-N models with live progress; a job arrives for a model the node lacks, the job
guard refuses it and reports MODEL_NOT_AVAILABLE to the scheduler, the install runs, and
the ``ready`` event carries the path an inference service would reload. It stops the node
with SIGTERM and exits 0 only if every step happened. Usage::

    python -m accel.node.demo --hub http://127.0.0.1:8600 --models-dir demo-run/node
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from accel.node.client import NodeEvent, follow_events
from accel.node.devscheduler import DevScheduler
from accel.units import format_progress

__all__ = ["main"]


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _progress_line(d: dict[str, Any]) -> str:
    total = d.get("bytes_total") or 0
    # bytes_done: every byte received, in flight included (accel.meter's model)
    done = min(total, d.get("bytes_done") or 0)
    pct = 100 * done / total if total else 0
    eta = d.get("eta_s")
    active = sum(1 for f in d.get("files", []) if f.get("state") == "downloading")
    figures = format_progress(done, total, d.get("speed_bps") or 0, eta)
    return (
        f"    {d['model_id']}@{d['version']:<8} {pct:5.1f}%  {figures}  ({active} files in flight)"
    )


async def _start_node(args: argparse.Namespace, scheduler_url: str) -> tuple[Any, str]:
    cmd = [
        sys.executable,
        "-m",
        "accel",
        "node",
        "--models-dir",
        str(args.models_dir),
        "--hub",
        args.hub,
        "--listen",
        "127.0.0.1:0",
        "--scheduler",
        scheduler_url,
        "--preseed-top",
        str(args.preseed_top),
        "--node-id",
        "demo-node",
        "--log-level",
        "WARNING",
    ]
    if args.limit_rate:
        cmd += ["--limit-rate", args.limit_rate]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        line = (await proc.stdout.readline()).decode()
    if "listening on" not in line:
        raise RuntimeError("accel node did not start")
    return proc, line.split()[-1]


async def _seed_ranking(s: aiohttp.ClientSession, hub: str) -> list[str]:
    async with s.get(f"{hub}/api/model-usage/ranking?limit=10") as r:
        ranking = await r.json()
    if ranking:
        return [row["model_id"] for row in ranking]
    async with s.get(f"{hub}/api/models") as r:
        models = [m["id"] for m in await r.json()]
    # A fresh hub has no history: the scheduler reports some use, as it would in production.
    for i, model_id in enumerate(models):
        for _ in range(len(models) - i):
            async with s.post(f"{hub}/api/model-usage", json={"model_id": model_id}) as r:
                r.raise_for_status()
    say(f"  (fresh hub: reported usage so the ranking reads {', '.join(models)})")
    return models


async def _story(args: argparse.Namespace) -> int:
    # SIGTERM (a script's cleanup) cancels the story, so the finally below stops the node.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    hub = args.hub.rstrip("/")
    async with aiohttp.ClientSession() as s, DevScheduler() as sched:
        say("== node: pre-seeding, job guard, scheduler report, ready event")
        ranking = await _seed_ranking(s, hub)
        say(f"  hub ranking: {', '.join(f'#{i + 1} {m}' for i, m in enumerate(ranking))}")
        say(f"  dev scheduler listening on {sched.http_url}")
        proc, url = await _start_node(args, sched.http_url)
        say(f"  accel node running: dashboard {url}/  events {url}/events")
        try:
            return await _run(args, s, sched, url, ranking)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(30):
                    rc = await proc.wait()
                say(f"  node stopped with SIGTERM (exit {rc}); downloads would resume at restart")


async def _run(
    args: argparse.Namespace,
    s: aiohttp.ClientSession,
    sched: DevScheduler,
    url: str,
    ranking: list[str],
) -> int:
    top = ranking[: args.preseed_top]
    events = follow_events(url, session=s, reconnect=False)
    last_line: dict[str, float] = {}
    ready: dict[str, NodeEvent] = {}

    async def until_ready(model_ids: set[str]) -> None:
        async with asyncio.timeout(args.timeout):
            async for ev in events:
                mid = ev.data.get("model_id") if isinstance(ev.data, dict) else None
                if ev.name == "progress" and mid:
                    now = time.monotonic()
                    done = ev.data.get("bytes_done", 0)
                    total = ev.data.get("bytes_total", 0)
                    if 0 < done < total and now - last_line.get(mid, 0) >= 0.4:
                        last_line[mid] = now
                        say(_progress_line(ev.data))
                elif ev.name == "ready" and mid:
                    ready[mid] = ev
                    say(f"  ready: {mid}@{ev.data['version']} at {ev.data['path']}")
                elif ev.name == "failed" and mid:
                    say(f"  FAILED: {mid}: {ev.data['error']['message']}")
                    raise RuntimeError(f"install of {mid} failed")
                if model_ids <= set(ready):
                    return

    say(f"-- pre-seeding the top {args.preseed_top}: {', '.join(top)}")
    await until_ready(set(top))

    missing = args.job_model or next((m for m in ranking if m not in top), None)
    if missing is None:
        say("  (every model is pre-seeded: no missing model to refuse a job for)")
        return 0
    job = {"job_id": "job-0001", "required_model_id": missing, "required_model_version": None}
    say(f"-- the scheduler assigns {json.dumps(job)}")
    async with s.post(f"{url}/api/jobs", json=job) as r:
        body = await r.json()
    if r.status != 409:
        say(f"  unexpected answer {r.status}: {body}")
        return 1
    say(
        f"  job guard refused it: {body['report']['reason']}; install queued: "
        f"{body['report']['install_queued']}"
    )
    (got,) = await sched.wait_for(1, timeout_s=30)
    say("  scheduler received: " + got.model_dump_json(exclude={"detail"}))
    await until_ready({missing})
    say(
        f"  an inference service on {url}/events would now reload {missing} from "
        f"{ready[missing].data['path']}"
    )
    async with s.post(f"{url}/api/jobs", json={**job, "job_id": "job-0002"}) as r:
        body = await r.json()
    say(f"-- the next job for {missing} runs: path {body.get('path')}")
    await events.aclose()
    return 0 if r.status == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hub", required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--preseed-top", type=int, default=1)
    parser.add_argument(
        "--job-model",
        help="the model the refused job needs (default: the best-ranked one not pre-seeded)",
    )
    parser.add_argument("--limit-rate", help="cap the node's bandwidth to watch progress")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_story(args))
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 143


if __name__ == "__main__":
    sys.exit(main())
