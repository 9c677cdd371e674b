"""``accel install hf://...`` vs ``huggingface_hub.snapshot_download``, same hub, same version.

Both tools read the hub's Hugging Face API (accel/hub/hfapi.py) through an nginx reverse
proxy on 127.0.0.1 that logs ``$bytes_sent`` (so what the origin sent is counted), once
with ``limit_rate 25m`` per connection (as CDNs cap each connection) and once uncapped.

- accel: ``accel install hf://MODEL@1 --hf-endpoint PROXY`` (every file's SHA256 checked
  before ``ready``, registry written, fsync'd);
- huggingface_hub: ``snapshot_download(MODEL, revision="1", local_dir=D, max_workers=8)``
  of the pinned version (checks no digest), in a child process with its own HF_HOME.

Scenarios: "big" (1 GiB + 20 files of 1-8 MiB) and "many" (500 files of 64 KiB-2 MiB),
the stores of bench/bench_install.py. Then a kill -9 half way through "big" on the capped
origin: each tool is started, killed when the origin has sent half the version, and run
again to the end; "refetched" = what the origin sent over both runs minus the version size.

Usage: ``./scripts/bench hf`` or ``python bench/bench_hf.py [--runs N] [--quick]``.
Writes ``bench/out/hf.json`` and prints a markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import psutil  # noqa: E402
from bench_install import DATA, disk_probe, ensure_store, settle  # noqa: E402

from tests.support.hfclient import hf_env  # noqa: E402
from tests.support.hub import running_hub  # noqa: E402
from tests.support.nginx import NGINX, Nginx, _free_port, _wait_listening  # noqa: E402

MiB = 1 << 20
PY = sys.executable


def _proxy_config(port: int, upstream: str, prefix: Path, limit_rate: str | None) -> str:
    user = "user root;" if os.geteuid() == 0 else ""
    limits = f"limit_rate {limit_rate};" if limit_rate else ""
    return f"""
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    log_format bytes '$status $request_length $bytes_sent';
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream hub {{ server {upstream}; keepalive 64; }}
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        access_log {prefix}/access.log bytes;
        location / {{
            proxy_pass http://hub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Buffered in memory only (no temp files): nginx reads the hub as fast as
            # the client drains, and limit_rate paces what it writes to the client
            # (with proxy_buffering off nginx does not apply limit_rate).
            proxy_buffering on;
            proxy_max_temp_file_size 0;
            proxy_buffers 8 64k;
            proxy_request_buffering off;
            {limits}
        }}
    }}
}}
"""


@contextlib.contextmanager
def proxy(upstream_url: str, limit_rate: str | None) -> Iterator[Nginx]:
    prefix = Path(tempfile.mkdtemp(prefix="accel-hfproxy-"))
    try:
        port = _free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(_proxy_config(port, upstream_url.split("//", 1)[1], prefix, limit_rate))
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = Nginx(f"http://127.0.0.1:{port}", port, prefix, prefix, proc)
        if not _wait_listening(port, proc):
            raise RuntimeError((prefix / "error.log").read_text(errors="replace"))
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def nginx_written(origin: Nginx) -> int:
    """Bytes nginx's workers have written so far (to client sockets, nearly all of it)."""
    master = psutil.Process(origin.proc.pid)
    return sum(c.io_counters().write_chars for c in master.children())


def _env(endpoint: str, home: Path) -> dict[str, str]:
    env = hf_env(endpoint, home)
    env.pop("HF_HUB_ENABLE_HF_TRANSFER", None)
    env["PYTHONPATH"] = str(REPO)
    return env


#: extra ``accel install`` options (``--max-parallel-files N``), set from the command line
ACCEL_EXTRA: list[str] = []


def accel_argv(endpoint: str, model: str, models: Path) -> list[str]:
    return [PY, "-m", "accel", "install", f"hf://{model}@1", "--hf-endpoint", endpoint,
            "--models-dir", str(models), "--quiet", *ACCEL_EXTRA]  # fmt: skip


def accel_hub_argv(endpoint: str, model: str, models: Path) -> list[str]:
    """The same version through the hub's own API (manifest + /storage), for the HF
    protocol's own per-file cost (a /resolve/ redirect per file, no blake3 blocks)."""
    return [PY, "-m", "accel", "install", f"{model}@1", "--hub", endpoint,
            "--models-dir", str(models), "--quiet", *ACCEL_EXTRA]  # fmt: skip


def hf_argv(model: str, out: Path) -> list[str]:
    code = (
        "from huggingface_hub import snapshot_download\n"
        f"snapshot_download({model!r}, revision='1', local_dir={str(out)!r}, max_workers=8)\n"
    )
    return [PY, "-c", code]


def _argv(tool: str, endpoint: str, model: str, out: Path) -> list[str]:
    if tool == "accel":
        return accel_argv(endpoint, model, out)
    if tool == "accel_hub_api":
        return accel_hub_argv(endpoint, model, out)
    return hf_argv(model, out / "d")


def run_tool(tool: str, endpoint: str, model: str, work: Path) -> tuple[float, float]:
    """One cold run: its wall and CPU seconds (user + system of the tool's process tree,
    from ``wait4``: accel's worker processes are its children, hf's threads its own)."""
    out = work / tool
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = _argv(tool, endpoint, model, out)
    settle()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=_env(endpoint, out / "home"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed ({proc.returncode}): {err[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return wall, usage.ru_utime + usage.ru_stime


def kill_half_way(tool: str, endpoint: str, origin: Nginx, model: str, size: int, work: Path) -> dict[str, Any]:  # fmt: skip
    out = work / f"kill-{tool}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = _argv(tool, endpoint, model, out)
    env = _env(endpoint, out / "home")
    base = origin.bytes_sent()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    # nginx logs a request only when it ends: half way is read live from what its
    # worker has written to sockets so far (proxied bytes go out with write(2)).
    w0 = nginx_written(origin)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if nginx_written(origin) - w0 >= size // 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
    time.sleep(1.0)  # nginx logs the cut requests once it notices the closed sockets
    first = origin.bytes_sent() - base
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{tool} rerun failed ({r.returncode}): {r.stderr[-2000:]}")
    total = origin.bytes_sent() - base
    shutil.rmtree(out, ignore_errors=True)
    return {
        "sent_before_kill_MiB": round(first / MiB, 1),
        "sent_total_MiB": round(total / MiB, 1),
        "refetched_MiB": round((total - size) / MiB, 1),
        "rerun_wall_s": round(wall, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smaller files, for a smoke run")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill -9 scenario")
    ap.add_argument("--only", choices=("big", "many"), action="append", help="scenarios")
    ap.add_argument("--origin", choices=("capped", "uncapped"), action="append")
    ap.add_argument(
        "--max-parallel-files",
        type=int,
        help="accel's files in flight (default: accel's own, 3); hf's max_workers is 8",
    )
    ap.add_argument(
        "--with-hub-api",
        action="store_true",
        help="also time accel over the hub's own API (same version): the HF protocol's cost",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "hf.json"))
    args = ap.parse_args()
    if args.max_parallel_files:
        ACCEL_EXTRA.extend(["--max-parallel-files", str(args.max_parallel_files)])
    DATA.mkdir(parents=True, exist_ok=True)
    root = DATA / "store"
    specs = ensure_store(root, args.quick)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    import huggingface_hub

    results: dict[str, Any] = {
        "runs": args.runs,
        "quick": args.quick,
        "commit": commit,
        "huggingface_hub": huggingface_hub.__version__,
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_before": [round(x, 1) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "accel_extra_args": ACCEL_EXTRA,
    }
    with running_hub(root) as hub, tempfile.TemporaryDirectory(dir=DATA) as tmp:
        work = Path(tmp)
        results["disk_MBps_before"] = disk_probe(work)
        origins = {"capped": ("capped_25MBps_per_conn", "25m"), "uncapped": ("uncapped", None)}
        for origin_name, limit in [origins[o] for o in args.origin or origins]:
            with proxy(hub.url, limit) as origin:
                for model in args.only or ("big", "many"):
                    tools = ["accel", "huggingface_hub"]
                    tools += ["accel_hub_api"] if args.with_hub_api else []
                    walls: dict[str, list[float]] = {t: [] for t in tools}
                    cpus: dict[str, list[float]] = {t: [] for t in tools}
                    for i in range(args.runs):
                        k = i % len(tools)  # the order rotates: none always runs first
                        for tool in tools[k:] + tools[:k]:
                            wall, cpu = run_tool(tool, origin.url, model, work)
                            walls[tool].append(wall)
                            cpus[tool].append(cpu)
                        print(origin_name, model, {k: round(v[-1], 2) for k, v in walls.items()},
                              "cpu", {k: round(v[-1], 2) for k, v in cpus.items()},
                              os.getloadavg()[0], flush=True)  # fmt: skip
                    med = {k: statistics.median(v) for k, v in walls.items()}
                    size = sum(specs[model].values())
                    results[f"{model}/{origin_name}"] = {
                        "files": len(specs[model]),
                        "bytes": size,
                        "walls_s": {k: [round(x, 2) for x in v] for k, v in walls.items()},
                        "median_s": {k: round(v, 2) for k, v in med.items()},
                        "cpu_s": {k: [round(x, 2) for x in v] for k, v in cpus.items()},
                        "median_cpu_s": {
                            k: round(statistics.median(v), 2) for k, v in cpus.items()
                        },
                        "MBps": {k: round(size / v / 1e6, 1) for k, v in med.items()},
                        "ratio_accel_to_hf": round(med["accel"] / med["huggingface_hub"], 3),
                        # per-run ratios: each pair ran back to back, under the same load
                        "ratios_per_run": [
                            round(a / h, 3)
                            for a, h in zip(walls["accel"], walls["huggingface_hub"], strict=True)
                        ],
                        "load_after": [round(x, 1) for x in os.getloadavg()],
                    }
                if not args.no_kill and limit is not None:
                    size = sum(specs["big"].values())
                    results["kill_half_way/big/capped"] = {
                        tool: kill_half_way(tool, origin.url, origin, "big", size, work)
                        for tool in ("accel", "huggingface_hub")
                    }
                    print(results["kill_half_way/big/capped"], flush=True)
    results["load_after"] = [round(x, 1) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
