"""Hub API under load: ``wrk -c64`` on the hub vs a bare aiohttp+uvloop app, same bytes.

100 models (2 versions of 3 files each) are published into a temp store and the real hub
(``accel serve``) is started. The baseline is the smallest aiohttp app on uvloop that
answers the same paths with the same bytes (captured from the hub), no auth, no ETag,
no middleware: what aiohttp itself costs. For ``/api/models/{id}`` and ``/api/models``,
rounds alternate hub and baseline; medians of req/s and p99 (``wrk --latency``).

    .venv/bin/python bench/bench_hub_api.py [--duration 5] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.hub import publish_model, running_hub  # noqa: E402

BASELINE = textwrap.dedent(
    """
    import asyncio, socket, sys
    from pathlib import Path
    import uvloop
    from aiohttp import web

    bodies = {p.name: p.read_bytes() for p in Path(sys.argv[1]).iterdir()}
    one, listing = bodies["one.json"], bodies["list.json"]

    async def get_one(request):
        return web.Response(body=one, content_type="application/json")

    async def get_list(request):
        return web.Response(body=listing, content_type="application/json")

    async def main():
        app = web.Application()
        app.router.add_get("/api/models/{model_id}", get_one)
        app.router.add_get("/api/models", get_list)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())
    """
)


def _wrk(url: str, duration: int) -> tuple[float, float]:
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert m is not None, out
    p99_ms = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return rps, p99_ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--hub-workers", type=int, default=1, help="accel serve --workers N")
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="accel-bench-api-") as tmp:
        root = Path(tmp) / "store"
        for i in range(args.models):
            for v in ("1.0.0", "1.1.0"):
                publish_model(
                    root, f"model-{i:03d}", v,
                    {"model.onnx": 1000 + i, "config.json": b"{}", "tokenizer/vocab.txt": 300},
                    task="asr" if i % 2 else "mt", languages=("zh", "en"), block_size=1 << 20,
                )  # fmt: skip
        with running_hub(root, extra_args=["--workers", str(args.hub_workers)]) as hub:
            bodies = Path(tmp) / "bodies"
            bodies.mkdir()
            paths = {"/api/models/{id}": "/api/models/model-042", "/api/models": "/api/models"}
            for name, path in (
                ("one.json", paths["/api/models/{id}"]),
                ("list.json", "/api/models"),
            ):
                with urllib.request.urlopen(hub.url + path) as r:
                    (bodies / name).write_bytes(r.read())
            sizes = {
                k: len((bodies / n).read_bytes())
                for k, n in zip(paths, ("one.json", "list.json"), strict=True)
            }
            base = subprocess.Popen(
                [sys.executable, "-c", BASELINE, str(bodies)], stdout=subprocess.PIPE, text=True
            )
            try:
                assert base.stdout is not None
                base_url = base.stdout.readline().strip()
                time.sleep(0.3)
                servers = {"hub": hub.url, "baseline": base_url}
                for label, path in paths.items():
                    for url in servers.values():  # same bytes on both
                        with urllib.request.urlopen(url + path) as r:
                            assert (
                                r.read()
                                == (
                                    bodies / ("one.json" if "{id}" in label else "list.json")
                                ).read_bytes()
                            )
                        _wrk(url + path, 1)  # warm-up
                    for r in range(args.rounds):
                        order = ["hub", "baseline"] if r % 2 == 0 else ["baseline", "hub"]
                        for s in order:
                            results.setdefault((label, s), []).append(
                                _wrk(servers[s] + path, args.duration)
                            )
            finally:
                base.terminate()
                base.wait(10)
    load_after = os.getloadavg()
    lines = [
        f"API under `wrk -t2 -c64 -d{args.duration}s --latency`, {args.models} models, "
        f"hub workers {args.hub_workers}, "
        f"{args.rounds} interleaved rounds, medians (load average before/after: "
        f"{load_before[0]:.2f}/{load_after[0]:.2f}):",
        "",
        "| endpoint | body | hub req/s | baseline req/s | hub / baseline | hub p99 | baseline p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in paths:
        hub_rps = statistics.median(x[0] for x in results[(label, "hub")])
        base_rps = statistics.median(x[0] for x in results[(label, "baseline")])
        hub_p99 = statistics.median(x[1] for x in results[(label, "hub")])
        base_p99 = statistics.median(x[1] for x in results[(label, "baseline")])
        lines.append(
            f"| `GET {label}` | {sizes[label]} B | {hub_rps:.0f} | {base_rps:.0f} | "
            f"{hub_rps / base_rps:.2f}x | {hub_p99:.1f} ms | {base_p99:.1f} ms |"
        )
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write("\n### Hub API (`bench/bench_hub_api.py`)\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
