"""How cost grows (issue 15): per-file install cost, ``accel get`` by size, hub p99 by catalog.

Three curves, each a table (bench/out/growth.md) and a PNG plot in bench/:

- ``installs``: versions of 10, 100, 1,000 and 10,000 files of 16 KiB, from the real hub
  (``accel serve``), installed by ``accel install`` into an ext4 models dir and into a
  tmpfs (/dev/shm), against ``aria2c -i LIST -j16`` over the same storage URLs with
  ``checksum=sha-256=`` on every entry (so both check every file). Wall and tree CPU per
  file; the marginal cost between the two largest versions (start-up cancelled out) shows
  whether anything grows faster than n. -> bench/growth_installs.png
- ``get``: ``accel get`` of 256 MiB, 1 GiB and 4 GiB (16 GiB with ``--big``: 32 GiB of
  disk) from nginx: wall per GiB and CPU per GiB (timed runs), peak tree PSS (a run of its
  own). -> bench/growth_get.png
- ``hub``: the hub with 10, 100, 1,000 and 10,000 models; ``wrk -t2 -c64 --latency`` on
  ``/api/models/{id}`` and on the catalog ``/api/models``: p99 and req/s.
  -> bench/growth_hub.png

Usage: ``./scripts/bench growth`` or ``python bench/bench_growth.py [--only installs|get|hub]
[--runs N] [--sizes 10,100,1000,10000] [--big]``. Writes bench/out/growth.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from measure import discard, load, machine, run_one, settle  # noqa: E402

from accel.hub.publish import publish  # noqa: E402
from tests.support.hub import make_files, publish_model, running_hub  # noqa: E402
from tests.support.nginx import start_nginx  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DATA = Path(os.environ.get("ACCEL_BENCH_DATA", "/var/tmp/accel-bench")) / "growth"
TMPFS = Path(os.environ.get("ACCEL_BENCH_TMPFS", "/dev/shm"))
PY = sys.executable


# ---- installs of many small files -------------------------------------------------------


def ensure_many_store(root: Path, sizes: list[int]) -> None:
    """One model ``files{N}`` per size, N files of 16 KiB each (kept between runs)."""
    for n in sizes:
        stamp = root / f".published-files{n}"
        if stamp.exists():
            continue
        spec = {f"d{i // 1000:02d}/f{i:05d}.bin": 16 * KiB for i in range(n)}
        with tempfile.TemporaryDirectory(dir=DATA) as tmp:
            make_files(Path(tmp), spec, seed=5)
            publish(Path(tmp), root, f"files{n}", "1", default=True, block_size=16 * MiB)
        stamp.touch()


def hub_files(hub_url: str, model: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{hub_url}/api/models/{model}/versions/1/manifest") as r:
        manifest = json.load(r)
    return {f["path"]: f["sha256"] for f in manifest["files"]}


def install_accel(hub_url: str, model: str, work: Path) -> tuple[float, float]:
    models = work / "models"
    shutil.rmtree(models, ignore_errors=True)
    settle()
    r = run_one([PY, "-m", "accel", "install", f"{model}@1", "--hub", hub_url,
                 "--models-dir", str(models), "--quiet"])  # fmt: skip
    reg = json.loads((models / "registry.json").read_text())
    assert reg["installs"][f"{model}@1"]["state"] == "ready", reg
    discard(models)
    return r.wall, r.cpu


def install_aria2c(
    hub_url: str, model: str, files: dict[str, str], work: Path
) -> tuple[float, float]:
    out = work / "aria2"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    listing = work / "list.txt"
    listing.write_text("".join(
        f"{hub_url}/storage/models/{model}/1/{rel}\n  out={rel}\n  checksum=sha-256={sha}\n"
        for rel, sha in files.items()
    ))  # fmt: skip
    settle()
    r = run_one(["aria2c", "-i", str(listing), "-j16", "-d", str(out), "--file-allocation=none",
                 "--allow-overwrite=true", "--auto-file-renaming=false",
                 "--console-log-level=error", "--summary-interval=0", "-q"])  # fmt: skip
    got = sum(1 for p in out.rglob("*.bin"))
    assert got == len(files), (got, len(files))
    discard(out)
    return r.wall, r.cpu


def bench_installs(sizes: list[int], runs: int) -> dict[str, Any]:
    DATA.mkdir(parents=True, exist_ok=True)
    root = DATA / "store-many"
    t0 = time.perf_counter()
    ensure_many_store(root, sizes)
    print(f"store ready in {time.perf_counter() - t0:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []
    with running_hub(root) as hub:
        for fs, base in (("ext4", DATA), ("tmpfs", TMPFS)):
            with tempfile.TemporaryDirectory(dir=base, prefix="accel-growth-") as tmp:
                work = Path(tmp)
                for n in sizes:
                    model = f"files{n}"
                    files = hub_files(hub.url, model)
                    got: dict[str, list[tuple[float, float]]] = {"accel": [], "aria2c": []}
                    for i in range(runs):
                        order = ["accel", "aria2c"] if i % 2 == 0 else ["aria2c", "accel"]
                        for tool in order:
                            if tool == "accel":
                                got[tool].append(install_accel(hub.url, model, work))
                            else:
                                got[tool].append(install_aria2c(hub.url, model, files, work))
                            w, c = got[tool][-1]
                            print(f"  {fs} {n:6d} files {tool:6s} {w:7.2f} s cpu {c:6.2f} s "
                                  f"({w / n * 1000:.2f} ms/file) load {load()}", flush=True)  # fmt: skip
                    row: dict[str, Any] = {"fs": fs, "files": n}
                    for tool, vals in got.items():
                        wall = statistics.median(v[0] for v in vals)
                        cpu = statistics.median(v[1] for v in vals)
                        row[tool] = {
                            "wall_s": round(wall, 3),
                            "cpu_s": round(cpu, 3),
                            "walls": [round(v[0], 3) for v in vals],
                            "ms_per_file": round(wall / n * 1000, 3),
                            "cpu_ms_per_file": round(cpu / n * 1000, 3),
                        }
                    rows.append(row)
    return {"rows": rows, "load_after": load()}


# ---- accel get by size ---------------------------------------------------------------------


def make_sparse_random(path: Path, size: int) -> str:
    """A random file of ``size`` bytes (kept) and its SHA256 (openssl: fast)."""
    sha_path = path.with_suffix(".sha256")
    if path.exists() and path.stat().st_size == size and sha_path.exists():
        return sha_path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            f.write(block)
            left -= len(block)
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    sha_path.write_text(out.split()[0])
    return out.split()[0]


def bench_get(sizes: list[int], runs: int) -> dict[str, Any]:
    rows = []
    src_dir = DATA / "get-src"
    out_dir = DATA / "get-out"
    out_dir.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        free = shutil.disk_usage(DATA).free
        src = src_dir / f"g{size}.bin"
        need = size * (1 if src.exists() else 2) + GiB
        if free < need:
            print(f"  skip {size / GiB:g} GiB: {free / GiB:.0f} GiB free", flush=True)
            continue
        sha = make_sparse_random(src, size)
        out = out_dir / "g.bin"
        walls, cpus = [], []
        with start_nginx(src_dir) as ng:
            argv = [PY, "-m", "accel", "get", ng.file_url(src.name), "-o", str(out),
                    "--sha256", sha, "--json"]  # fmt: skip
            for _ in range(runs):
                settle()
                r = run_one(argv)
                walls.append(r.wall)
                cpus.append(r.cpu)
                out.unlink()
                print(f"  get {size / GiB:5.2f} GiB {r.wall:6.2f} s cpu {r.cpu:5.2f} s "
                      f"load {load()}", flush=True)  # fmt: skip
            settle()
            r = run_one(argv, sample_pss=True)
            out.unlink()
        gib = size / GiB
        rows.append({
            "size_gib": gib,
            "wall_s": round(statistics.median(walls), 3),
            "walls": [round(w, 3) for w in walls],
            "s_per_gib": round(statistics.median(walls) / gib, 3),
            "cpu_s_per_gib": round(statistics.median(cpus) / gib, 3),
            "peak_pss_mib": round(r.peak_pss / MiB, 1),
        })  # fmt: skip
        print(f"  get {gib:5.2f} GiB peak PSS {r.peak_pss / MiB:.1f} MiB", flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"rows": rows, "load_after": load()}


# ---- hub p99 by catalog size --------------------------------------------------------------


def ensure_hub_stores(sizes: list[int]) -> dict[int, Path]:
    """Stores of 10..10,000 models (one version, one small file each): the biggest is
    published once, the others are hard-linked prefixes of it (publishing costs ~16 ms
    a model)."""
    biggest = max(sizes)
    base = DATA / f"hub-{biggest}"
    stamp = base / ".complete"
    if not stamp.exists():
        base.mkdir(parents=True, exist_ok=True)
        have = (
            {p.name for p in (base / "models").glob("m*")} if (base / "models").exists() else set()
        )
        for i in range(biggest):
            if f"m{i:05d}" not in have:
                publish_model(base, f"m{i:05d}", "1", {"config.json": 200 + i % 50,
                                                       "model.bin": 4096})  # fmt: skip
        stamp.touch()
    stores = {biggest: base}
    for n in sizes:
        if n == biggest:
            continue
        root = DATA / f"hub-{n}"
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            (root / "models").mkdir(parents=True)
            for i in range(n):
                shutil.copytree(base / "models" / f"m{i:05d}", root / "models" / f"m{i:05d}",
                                copy_function=os.link)  # fmt: skip
            shutil.copy(base / "catalog.stamp", root / "catalog.stamp")
            (root / ".complete").touch()
        stores[n] = root
    return stores


def wrk(url: str, duration: int) -> tuple[float, float, int]:
    """req/s, p99 ms and timeouts of ``wrk -t2 -c64``. wrk gives up on a request after
    2 s (its default timeout) and leaves it out of the latency figures, so a run with
    timeouts reports p99 as at least 2000 ms."""
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m is None or rps is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk:\n{out}")
    if errors is not None and any(int(errors.group(i)) for i in (1, 2, 3)):
        raise RuntimeError(f"wrk:\n{out}")
    timeouts = int(errors.group(4)) if errors is not None else 0
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return float(rps.group(1)), max(p99, 2000.0) if timeouts else p99, timeouts


@contextlib.contextmanager
def slow_start_hub(root: Path, wait_s: float = 300.0, workers: int = 1) -> Iterator[str]:
    """``accel serve`` over ``root``; its URL. tests/support/hub.py waits 20 s for the
    hub's first line: a catalog of 10,000 models takes longer than that to load on a
    busy machine (seen: > 20 s at load 20-30), so this waits up to ``wait_s``."""
    argv = [PY, "-m", "accel", "serve", "--root", str(root), "--port", "0"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    proc = subprocess.Popen(argv,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)  # fmt: skip
    try:
        assert proc.stdout is not None
        t0 = time.perf_counter()
        line = proc.stdout.readline().decode()
        if " at http://" not in line:
            raise RuntimeError(f"hub did not start: {line!r}")
        url = line.split(" at ", 1)[1].split()[0]
        while time.perf_counter() - t0 < wait_s:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        print(f"  hub over {root.name} up in {time.perf_counter() - t0:.1f} s", flush=True)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def bench_hub(sizes: list[int], duration: int, rounds: int, workers: int = 1) -> dict[str, Any]:
    stores = ensure_hub_stores(sizes)
    rows = []
    for n in sizes:
        with slow_start_hub(stores[n], workers=workers) as hub_url:
            paths = {"model": f"/api/models/m{n // 2:05d}", "catalog": "/api/models"}
            row: dict[str, Any] = {"models": n}
            for label, path in paths.items():
                with urllib.request.urlopen(hub_url + path) as r:
                    body = len(r.read())
                wrk(hub_url + path, 1)  # warm-up
                got = [wrk(hub_url + path, duration) for _ in range(rounds)]
                row[label] = {
                    "body_bytes": body,
                    "rps": round(statistics.median(g[0] for g in got), 1),
                    "p99_ms": round(statistics.median(g[1] for g in got), 2),
                    "p99s": [round(g[1], 2) for g in got],
                    "timeouts": sum(g[2] for g in got),
                }
                print(f"  hub {n:6d} models {label:8s} {row[label]['rps']:8.0f} req/s "
                      f"p99 {row[label]['p99_ms']:7.2f} ms body {body} B load {load()}",
                      flush=True)  # fmt: skip
            rows.append(row)
    return {
        "rows": rows,
        "duration_s": duration,
        "rounds": rounds,
        "hub_workers": workers,
        "load_after": load(),
    }


# ---- tables and plots -----------------------------------------------------------------------


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Command: `{res['command']}`; commit {m['commit']}; {m['utc']} UTC  ",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, sha_ni {'yes' if m['sha_ni'] else 'no'}; "
        f"load before {m['loadavg']}  ",
    ]
    if "installs" in res:
        ins = res["installs"]
        lines += ["", f"Installs of N files of 16 KiB from the hub, median of {res['runs']} "
                  f"(load after {ins['load_after']}); aria2c = `aria2c -i LIST -j16` with "
                  "`checksum=sha-256=` on every entry:", "",
                  "| fs | files | accel wall s | accel ms/file | accel CPU ms/file | "
                  "aria2c wall s | aria2c ms/file | aria2c CPU ms/file | accel/aria2c |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in ins["rows"]:
            a, b = r["accel"], r["aria2c"]
            lines.append(
                f"| {r['fs']} | {r['files']} | {a['wall_s']:.2f} | {a['ms_per_file']:.2f} | "
                f"{a['cpu_ms_per_file']:.2f} | {b['wall_s']:.2f} | {b['ms_per_file']:.2f} | "
                f"{b['cpu_ms_per_file']:.2f} | {a['wall_s'] / b['wall_s']:.2f}x |"
            )
        for fs in ("ext4", "tmpfs"):
            rs = [r for r in ins["rows"] if r["fs"] == fs]
            if len(rs) >= 2:
                lo, hi = rs[-2], rs[-1]
                dn = hi["files"] - lo["files"]
                mw = (hi["accel"]["wall_s"] - lo["accel"]["wall_s"]) / dn * 1000
                mc = (hi["accel"]["cpu_s"] - lo["accel"]["cpu_s"]) / dn * 1000
                lines.append(f"\n{fs}: accel's marginal cost from {lo['files']} to "
                             f"{hi['files']} files: {mw:.2f} ms wall, {mc:.2f} ms CPU per file")  # fmt: skip
    if "get" in res:
        g = res["get"]
        lines += ["", f"`accel get` by size (nginx, ext4), median of {res['runs']}; peak tree "
                  f"PSS from a run of its own (load after {g['load_after']}):", "",
                  "| size GiB | wall s | runs | s per GiB | CPU s per GiB | peak PSS MiB |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in g["rows"]:
            lines.append(f"| {r['size_gib']:g} | {r['wall_s']:.2f} | "
                         f"{', '.join(f'{w:.2f}' for w in r['walls'])} | {r['s_per_gib']:.2f} | "
                         f"{r['cpu_s_per_gib']:.2f} | {r['peak_pss_mib']:.1f} |")  # fmt: skip
    if "hub" in res:
        h = res["hub"]
        lines += ["", f"Hub under `wrk -t2 -c64 -d{h['duration_s']}s --latency`, median of "
                  f"{h['rounds']} rounds (load after {h['load_after']}):", "",
                  "| models | /api/models/{id} req/s | p99 ms | catalog req/s | p99 ms | catalog body |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in h["rows"]:
            a, c = r["model"], r["catalog"]

            def p99(x: dict[str, Any]) -> str:
                t = x.get("timeouts", 0)
                return f">= {x['p99_ms']:.0f} ({t} timeouts)" if t else f"{x['p99_ms']:.2f}"

            lines.append(f"| {r['models']} | {a['rps']:.0f} | {p99(a)} | {c['rps']:.0f} | "
                         f"{p99(c)} | {c['body_bytes'] / 1000:.0f} kB |")  # fmt: skip
    return "\n".join(lines)


def plots(res: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if "installs" in res:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for fs, style in (("ext4", "-"), ("tmpfs", "--")):
            rs = [r for r in res["installs"]["rows"] if r["fs"] == fs]
            n = [r["files"] for r in rs]
            for tool, color in (("accel", "C0"), ("aria2c", "C1")):
                ax1.plot(n, [r[tool]["ms_per_file"] for r in rs], style, color=color,
                         marker="o", label=f"{tool} {fs}")  # fmt: skip
                ax2.plot(n, [r[tool]["cpu_ms_per_file"] for r in rs], style, color=color,
                         marker="o", label=f"{tool} {fs}")  # fmt: skip
        ax1.axhline(0.8, color="grey", lw=0.8, ls=":", label="target 0.8 ms")
        for ax, title in ((ax1, "wall ms per file"), (ax2, "CPU ms per file")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("files of 16 KiB in the version")
            ax.set_title(title)
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = REPO / "bench" / "growth_installs.png"
        fig.savefig(p, dpi=100)
        made.append(p)
    if "get" in res and res["get"]["rows"]:
        rs = res["get"]["rows"]
        fig, ax1 = plt.subplots(figsize=(6, 4))
        x = [r["size_gib"] for r in rs]
        ax1.plot(x, [r["s_per_gib"] for r in rs], "o-", label="wall s per GiB")
        ax1.plot(x, [r["cpu_s_per_gib"] for r in rs], "s-", label="CPU s per GiB")
        ax1.set_xscale("log", base=2)
        ax1.set_xlabel("file size GiB")
        ax1.set_ylabel("seconds per GiB")
        ax2 = ax1.twinx()
        ax2.plot(x, [r["peak_pss_mib"] for r in rs], "^--", color="C2", label="peak PSS MiB")
        ax2.axhline(64, color="C2", lw=0.8, ls=":")
        ax2.set_ylabel("peak tree PSS MiB (target 64)")
        ax2.set_ylim(bottom=0)
        fig.legend(fontsize=7, loc="upper left")
        ax1.set_title("accel get by size")
        fig.tight_layout()
        p = REPO / "bench" / "growth_get.png"
        fig.savefig(p, dpi=100)
        made.append(p)
    if "hub" in res:
        rs = res["hub"]["rows"]
        fig, ax = plt.subplots(figsize=(6, 4))
        x = [r["models"] for r in rs]
        ax.plot(x, [r["model"]["p99_ms"] for r in rs], "o-", label="/api/models/{id} p99")
        ax.plot(x, [r["catalog"]["p99_ms"] for r in rs], "s-", label="/api/models p99")
        ax.axhline(10, color="grey", lw=0.8, ls=":", label="target 10 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("models in the catalog")
        ax.set_ylabel("p99 ms under wrk -c64")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = REPO / "bench" / "growth_hub.png"
        fig.savefig(p, dpi=100)
        made.append(p)
    plt.close("all")
    return made


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["installs", "get", "hub"], action="append")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="10,100,1000,10000", help="files per version")
    ap.add_argument("--models", default="10,100,1000,10000", help="hub catalog sizes")
    ap.add_argument("--get-sizes", default="256M,1G,4G")
    ap.add_argument("--big", action="store_true", help="also accel get a 16 GiB file")
    ap.add_argument("--duration", type=int, default=5, help="wrk seconds per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--hub-workers", type=int, default=1, help="accel serve --workers for the hub rows"
    )
    args = ap.parse_args()
    only = args.only or ["installs", "get", "hub"]
    units = {"M": MiB, "G": GiB}
    get_sizes = [int(s[:-1]) * units[s[-1]] for s in args.get_sizes.split(",")]
    if args.big:
        get_sizes.append(16 * GiB)
    DATA.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "command": "./scripts/bench growth"
        + (f" (bench/bench_growth.py {' '.join(sys.argv[1:])})" if sys.argv[1:] else ""),
        "runs": args.runs,
        "machine": machine(),
    }
    if "installs" in only:
        res["installs"] = bench_installs([int(s) for s in args.sizes.split(",")], args.runs)
    if "get" in only:
        res["get"] = bench_get(get_sizes, args.runs)
    if "hub" in only:
        res["hub"] = bench_hub(
            [int(s) for s in args.models.split(",")], args.duration, args.rounds, args.hub_workers
        )
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    name = "growth" if len(only) == 3 else "growth-" + "-".join(only)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (out / f"{name}.md").write_text(md + "\n")
    for p in plots(res):
        print(f"plot: {p.relative_to(REPO)}")
    print(md)


if __name__ == "__main__":
    main()
