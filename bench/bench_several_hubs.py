"""Several hubs behind one address: the full figures of "Scale-out II" (issue 18).

Two real hubs (``accel serve --usage-db postgresql://...``) over one directory store,
nginx in front (tests/support/balancer.py: an ``upstream`` with both), a real
PostgreSQL (tests/support/postgres.py, fsync on as in production):

1. ``--reports N`` (default 1,000) concurrent ``POST /api/model-usage`` spread over hub
   A, hub B and the balancer: how many were answered 200, and whether every one of them
   is in both hubs' rankings (read right after the last answer, and again 2 s later);
2. ``--installs N`` (default 200) ``accel install`` runs through the balancer,
   ``--parallel`` at a time, into fresh models dirs, while a chaos thread kills one hub
   with SIGKILL every ``--kill-every`` seconds and restarts it ``--down`` seconds later
   (alternating A and B): how many ended ready with every file's SHA256 right, and the
   ranking read from either hub (identical or not).

Usage: ``python bench/bench_several_hubs.py [--reports 1000] [--installs 200]``.
Writes ``bench/out/several_hubs.json`` and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from accel.schema import VersionManifest  # noqa: E402
from tests.support.balancer import start_balancer  # noqa: E402
from tests.support.hub import RunningHub, publish_model, running_hub  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402

MiB = 1 << 20


def _ranking(url: str) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/model-usage/ranking?limit=10000", timeout=10) as r:
        return list(json.loads(r.read()))


async def _reports(
    urls: list[str], models: list[str], n: int
) -> tuple[Counter[str], Counter[int], float]:
    connector = aiohttp.TCPConnector(limit=n)
    ok: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            mid = models[i % len(models)]
            try:
                async with session.post(
                    f"{urls[i % len(urls)]}/api/model-usage", json={"model_id": mid}
                ) as r:
                    await r.read()
                    statuses[r.status] += 1
                    if r.status == 200:
                        ok[mid] += 1
            except aiohttp.ClientError:
                statuses[0] += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        return ok, statuses, time.monotonic() - t0


def _want(counts: Counter[str]) -> list[dict[str, Any]]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"model_id": m, "request_count": c, "rank": i} for i, (m, c) in enumerate(ordered, 1)]


def bench_reports(
    a: RunningHub, b: RunningHub, lb_url: str, models: list[str], n: int
) -> dict[str, Any]:
    before = {r["model_id"]: r["request_count"] for r in _ranking(a.url)}
    ok, statuses, took = asyncio.run(_reports([a.url, b.url, lb_url], models, n))
    want = _want(Counter({m: before.get(m, 0) + ok[m] for m in set(before) | set(ok)}))
    now = [_ranking(a.url), _ranking(b.url)]
    time.sleep(2)
    later = [_ranking(a.url), _ranking(b.url)]
    return {
        "reports": n,
        "answered_200": sum(ok.values()),
        "statuses": dict(statuses),
        "seconds": round(took, 3),
        "reports_per_s": round(n / took, 1),
        "exact_at_once_on_both": now == [want, want],
        "exact_after_2s_on_both": later == [want, want],
    }


def _install(lb_url: str, models_dir: Path, spec: str) -> tuple[int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    for k in ("ACCEL_HUB", "ACCEL_TOKEN", "ACCEL_MODELS_DIR"):
        env.pop(k, None)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "accel",
            "install",
            spec,
            "--hub",
            lb_url,
            "--models-dir",
            str(models_dir),
            "-q",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    return r.returncode, r.stderr.strip()[-300:]


def _verified(models_dir: Path, manifest: VersionManifest) -> bool:
    base = models_dir / manifest.model_id / manifest.version
    for f in manifest.files:
        path = base / f.path
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != f.sha256:
            return False
    return True


def bench_installs(
    hubs: list[RunningHub],
    lb_url: str,
    manifests: list[VersionManifest],
    n: int,
    parallel: int,
    kill_every: float,
    down: float,
    work: Path,
) -> dict[str, Any]:
    before = sum(r["request_count"] for r in _ranking(hubs[0].url))
    stop = threading.Event()
    kills: list[str] = []

    def chaos() -> None:
        i = 0
        while not stop.wait(kill_every):
            victim = hubs[i % 2]
            i += 1
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            kills.append(victim.url)
            if stop.wait(down):
                victim.restart()
                break
            victim.restart()

    def one(i: int) -> tuple[bool, str]:
        m = manifests[i % len(manifests)]
        models_dir = work / f"node-{i:03d}"
        code, err = _install(lb_url, models_dir, f"{m.model_id}@{m.version}")
        ok = code == 0 and _verified(models_dir, m)
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(models_dir)
        return ok, err

    killer = threading.Thread(target=chaos, daemon=True)
    t0 = time.monotonic()
    killer.start()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, range(n)))
    took = time.monotonic() - t0
    stop.set()
    killer.join(60)
    for h in hubs:  # both up again for the reading
        if h.proc.poll() is not None:
            h.restart()
    time.sleep(0.5)
    ranks = [_ranking(h.url) for h in hubs]
    failures = [err for ok, err in results if not ok]
    return {
        "installs": n,
        "parallel": parallel,
        "ready_and_verified": sum(ok for ok, _ in results),
        "failed": len(failures),
        "failures": failures[:5],
        "hub_kills": len(kills),
        "seconds": round(took, 1),
        "ranking_identical_on_both": ranks[0] == ranks[1],
        "install_counts_added": sum(r["request_count"] for r in ranks[0]) - before,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=1000)
    ap.add_argument("--installs", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=6)
    ap.add_argument("--kill-every", type=float, default=4.0)
    ap.add_argument("--down", type=float, default=2.0)
    ap.add_argument("--file-mib", type=int, default=4)
    args = ap.parse_args()
    random.seed(1)
    out: dict[str, Any] = {"loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    with tempfile.TemporaryDirectory(prefix="accel-bench-hubs-") as tmp:
        work = Path(tmp)
        root = work / "store"
        manifests = [
            publish_model(
                root,
                f"m{i}",
                "1.0",
                {
                    "model.bin": args.file_mib * MiB + i,
                    **{f"s/f{j}.txt": 3000 + j for j in range(8)},
                },
                block_size=MiB,
            )
            for i in range(4)
        ]
        with running_postgres(fsync=True) as pg:
            url = pg.create_database()
            extra = ["--usage-db", url]
            with contextlib.ExitStack() as stack:
                a = stack.enter_context(running_hub(root, extra_args=extra))
                b = stack.enter_context(running_hub(root, extra_args=extra))
                lb = stack.enter_context(start_balancer([a.url, b.url]))
                models = [m.model_id for m in manifests]
                out["reports"] = bench_reports(a, b, lb.url, models, args.reports)
                print(json.dumps(out["reports"]), flush=True)
                if args.installs:
                    out["installs"] = bench_installs(
                        [a, b],
                        lb.url,
                        manifests,
                        args.installs,
                        args.parallel,
                        args.kill_every,
                        args.down,
                        work,
                    )
                    print(json.dumps(out["installs"]), flush=True)
    out["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    dest = REPO / "bench" / "out"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "several_hubs.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    ok = out["reports"]["answered_200"] == args.reports and out["reports"]["exact_at_once_on_both"]
    if "installs" in out:
        ok = ok and out["installs"]["ready_and_verified"] == args.installs
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
