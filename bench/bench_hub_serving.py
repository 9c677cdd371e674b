"""File serving: the hub's /storage route vs nginx on 127.0.0.1, same file, same run.

A 1 GiB pseudo-random file is published into a temp store; nginx (sendfile on, two
workers: its ``auto`` on 2 cores, as the hub also uses both cores through its threads) serves the very same file from the store's ``files`` directory. Each round
fetches it once per (client, server) pair in alternating order: ``aria2c -x16 -s16 -k8M``
into /dev/shm and ``curl -o /dev/null``. Medians over the rounds, ratio hub / nginx.
Prints a Markdown table and, with ``--write``, appends it to bench/RESULTS.md.

    .venv/bin/python bench/bench_hub_serving.py [--size 1GiB] [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from accel.units import format_bytes, parse_size  # noqa: E402
from tests.support.hub import publish_model, running_hub  # noqa: E402
from tests.support.nginx import start_nginx  # noqa: E402

MODEL, VERSION, NAME = "bench-big", "1.0.0", "big.bin"


def _aria2c(url: str, out_dir: Path) -> float:
    target = out_dir / NAME
    target.unlink(missing_ok=True)
    cmd = [
        "aria2c", "-x16", "-s16", "-k8M", "--file-allocation=none", "--allow-overwrite=true",
        "--auto-file-renaming=false", "--console-log-level=warn", "--summary-interval=0",
        "--check-certificate=false", "-d", str(out_dir), "-o", NAME, url,
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    target.unlink(missing_ok=True)
    return elapsed


def _curl(url: str, out_dir: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sSf", "-o", "/dev/null", url], check=True)
    return time.perf_counter() - t0


def _wrk_range(url: str, rng: str, duration: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "-H", f"Range: bytes={rng}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m is not None, out
    return float(m.group(1))


RANGES = {"64 KiB": "1048576-1114111", "1 MiB": "8388608-9437183"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--nginx-workers", type=int, default=2, help="2 = nginx's 'auto' on this machine"
    )
    ap.add_argument("--range-rounds", type=int, default=3, help="rounds of wrk Range tests")
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    size = parse_size(args.size)
    load_before = os.getloadavg()
    clients = {"aria2c -x16 -s16 -k8M": _aria2c, "curl": _curl}
    times: dict[tuple[str, str], list[float]] = {}
    rps: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="accel-bench-") as tmp:
        root = Path(tmp) / "store"
        out = Path(tempfile.mkdtemp(prefix="accel-bench-", dir="/dev/shm"))
        try:
            publish_model(root, MODEL, VERSION, {NAME: size}, block_size=16 * 1024 * 1024)
            files = root / "models" / MODEL / VERSION / "files"
            with running_hub(root) as hub, start_nginx(files, workers=args.nginx_workers) as nginx:
                urls = {
                    "hub": hub.file_url(MODEL, VERSION, NAME),
                    "nginx": f"{nginx.url}/{NAME}",
                }
                for url in urls.values():  # warm the page cache and both servers
                    _curl(url, out)
                for r in range(args.rounds):
                    order = ["hub", "nginx"] if r % 2 == 0 else ["nginx", "hub"]
                    for client, run in clients.items():
                        for server in order:
                            times.setdefault((client, server), []).append(run(urls[server], out))
                    if r < args.range_rounds:
                        for label, rng in RANGES.items():
                            for server in order:
                                rps.setdefault((label, server), []).append(
                                    _wrk_range(urls[server], rng, 3)
                                )
        finally:
            shutil.rmtree(out, ignore_errors=True)
    load_after = os.getloadavg()
    lines = [
        f"File serving, {format_bytes(size)} file, nginx {args.nginx_workers} worker(s), "
        f"{args.rounds} interleaved rounds, medians "
        f"(load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f}):",
        "",
        "| client | hub MB/s | nginx MB/s | hub / nginx |",
        "|---|---|---|---|",
    ]
    for client in clients:
        hub_t = statistics.median(times[(client, "hub")])
        ngx_t = statistics.median(times[(client, "nginx")])
        lines.append(
            f"| {client} | {size / hub_t / 1e6:.0f} | {size / ngx_t / 1e6:.0f} | "
            f"{ngx_t / hub_t:.2f}x |"
        )
    if rps:
        lines += [
            "",
            "Chunk-sized Range requests, `wrk -t2 -c32 -d3s -H 'Range: bytes=...'`, medians:",
            "",
            "| range | hub req/s | nginx req/s | hub / nginx |",
            "|---|---|---|---|",
        ]
        for label in RANGES:
            h = statistics.median(rps[(label, "hub")])
            n = statistics.median(rps[(label, "nginx")])
            lines.append(f"| {label} | {h:.0f} | {n:.0f} | {h / n:.2f}x |")
    lines.append("")
    lines.append(
        "raw seconds: "
        + "; ".join(f"{c}/{s}: {', '.join(f'{t:.2f}' for t in v)}" for (c, s), v in times.items())
    )
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write("\n### Hub file serving (`bench/bench_hub_serving.py`)\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
