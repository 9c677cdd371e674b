"""Load on the real hub: 200 concurrent wrk connections mixing ranged downloads and API
calls. No socket error, no non-2xx answer, resident memory flat, p50/p99 reported.

Default suite: 8 s; ``ACCEL_SOAK=1``: 60 s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.reliability.figures import record_figure
from tests.support.hub import publish_model, running_hub

SOAK = os.environ.get("ACCEL_SOAK") == "1"
MiB = 1024 * 1024
LUA = Path(__file__).with_name("hubload.lua")


def _rss(pid: int) -> int:
    try:
        p = psutil.Process(pid)
        return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


@pytest.mark.timeout(300 if SOAK else 90)
def test_hub_under_200_concurrent_clients(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk not installed: run ./scripts/setup")
    duration = 60 if SOAK else 8
    root = tmp_path / "store"
    size = 64 * MiB
    publish_model(root, "load-model", "1.0", {"weights.bin": size, "config.json": 500})
    for i in range(20):  # a catalog of some size for the API calls
        publish_model(root, f"other-{i:02d}", "1.0", {"a.bin": 1000 + i})
    with running_hub(root) as hub:
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(_rss(hub.proc.pid))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        env = {
            **os.environ,
            "LOAD_FILE": "/storage/models/load-model/1.0/weights.bin",
            "LOAD_SIZE": str(size),
            "LOAD_MODEL": "load-model",
            "LOAD_VERSION": "1.0",
            "LOAD_API_SHARE": "0.2",
        }
        t0 = time.monotonic()
        r = subprocess.run(
            ["wrk", "-t2", "-c200", f"-d{duration}s", "--timeout", "10s", "--latency",
             "-s", str(LUA), hub.url],
            capture_output=True, text=True, env=env, timeout=duration + 60,
        )  # fmt: skip
        elapsed = time.monotonic() - t0
        stop.set()
        sampler.join(5)
        alive = hub.proc.poll() is None
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("WRKJSON "))
    res = json.loads(line[len("WRKJSON ") :])
    errors = {k: res[k] for k in ("connect", "read", "write", "status", "timeout")}
    n = len(samples)
    warm = statistics.median(samples[n // 5 : 2 * n // 5]) if n >= 5 else samples[0]
    late = statistics.median(samples[-(n // 5 or 1) :])
    rps = res["requests"] / (res["duration_us"] / 1e6)
    gbps = res["bytes"] / (res["duration_us"] / 1e6) / 1e9
    text = (
        f"{res['requests']} requests in {duration} s ({rps:.0f}/s, {gbps:.2f} GB/s), "
        f"errors {errors}, p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
        f"max {res['max_ms']:.0f} ms, hub RSS {warm / MiB:.0f} -> {late / MiB:.0f} MiB "
        f"(peak {max(samples) / MiB:.0f} MiB)"
    )
    print(f"hub load: {text} [{elapsed:.1f} s]")
    record_figure(
        "hub_load",
        "wrk -t2 -c200 (80% ranged GETs of 16-512 KiB, 20% API incl. POST usage)",
        text,
    )
    assert alive
    assert all(v == 0 for v in errors.values()), (errors, r.stdout)
    assert res["requests"] > 100 * duration
    assert late <= warm * 1.25 + 16 * MiB, (
        f"hub memory grew: {warm / MiB:.0f} -> {late / MiB:.0f} MiB"
    )
