"""accel get vs curl, aria2c and hf_transfer on a 1 GiB file from nginx on 127.0.0.1.

Origins: S1 plain nginx; S2 nginx with ``limit_rate 25m`` per connection (as CDNs cap
connections; ``sendfile_max_chunk 64k`` so the cap also holds for short Range answers).
Each tool runs in turn, interleaved, ``--runs`` times (default 5); the table reports
median wall time, MB/s, the ratio of accel's median to each competitor's, and the peak
RSS summed over the tool's whole process tree (psutil, sampled every 20 ms). accel runs
with ``--sha256`` (verified); the others do not verify.

Extra figures: accel's peak tree memory for a 4 GiB file; bytes the origin sent over a
kill -9 at about half way plus the rerun (nginx access log ``$bytes_sent``); time from
the last byte to the verified, renamed file (accel's ``verify_tail_s``).

Usage: ``./scripts/bench fetch`` or ``python bench/bench_fetch.py [--runs N] [--quick]``.
Writes ``bench/out/fetch.json`` and prints a markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from accel.fetch.checkpoint import load_checkpoint  # noqa: E402
from tests.support.nginx import start_nginx  # noqa: E402

GiB = 1 << 30
DATA = Path(os.environ.get("ACCEL_BENCH_DATA", "/var/tmp/accel-bench"))
PY = sys.executable


def make_file(path: Path, size: int) -> str:
    """A random file of ``size`` bytes (kept between runs) and its SHA256."""
    sha_path = path.with_suffix(".sha256")
    if path.exists() and path.stat().st_size == size and sha_path.exists():
        return sha_path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 16 << 20))
            f.write(block)
            h.update(block)
            left -= len(block)
    sha_path.write_text(h.hexdigest())
    return h.hexdigest()


def run_measured(argv: list[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run argv; return wall seconds, peak RSS of its whole tree, stdout."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the child exits
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env)
    peak = 0
    ps = psutil.Process(proc.pid)
    status = None
    usage = None
    while status is None:
        pid, status_, usage_ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status, usage = status_, usage_
            proc.returncode = os.waitstatus_to_exitcode(status_)
            break
        try:
            procs = [ps, *ps.children(recursive=True)]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    out.seek(0)
    stdout = out.read().decode(errors="replace")
    out.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}): {err[-2000:]}")
    # CPU seconds of the tool and every descendant it waited for (load-independent).
    cpu = usage.ru_utime + usage.ru_stime if usage is not None else 0.0
    return {"wall": wall, "peak_rss": peak, "stdout": stdout, "cpu_s": cpu}


def tools(url: str, out: Path, sha: str, hf_files: int) -> dict[str, list[str]]:
    return {
        "accel": [PY, "-m", "accel", "get", url, "-o", str(out), "--sha256", sha, "--json"],
        "curl": ["curl", "-sS", "-o", str(out), url],
        "aria2c": [
            "aria2c",
            "-q",
            "-x16",
            "-s16",
            "-k8M",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "-d",
            str(out.parent),
            "-o",
            out.name,
            url,
        ],
        "hf_transfer": [
            PY,
            "-c",
            "import sys, hf_transfer; "
            "hf_transfer.download(sys.argv[1], sys.argv[2], int(sys.argv[3]), 10 * 1024 * 1024)",
            url,
            str(out),
            str(hf_files),
        ],
    }


def settle() -> None:
    """Flush every dirty page before the next tool starts, outside the timing.

    Without it the next tool pays for the previous one's writeback (1 GiB of dirty
    pages on this virtio disk): in one run, whichever tool came third was 30-90 %
    slower whatever it was.
    """
    os.sync()
    time.sleep(0.5)


def check(out: Path, sha: str, size: int) -> None:
    if out.stat().st_size != size:
        raise RuntimeError(f"{out} has {out.stat().st_size} bytes, expected {size}")
    if os.environ.get("ACCEL_BENCH_CHECK_ALL"):
        h = hashlib.sha256()
        with open(out, "rb") as f:
            while block := f.read(16 << 20):
                h.update(block)
        if h.hexdigest() != sha:
            raise RuntimeError(f"{out}: wrong sha256")


def scenario(name: str, limit: str | None, src: Path, sha: str, runs: int, hf_files: int) -> dict:
    out_dir = DATA / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    with start_nginx(src.parent, limit_rate=limit) as ng:
        url = ng.file_url(src.name)
        for i in range(runs):
            order = list(tools(url, out_dir / "x", sha, hf_files))
            if i % 2:
                order.reverse()  # interleave: no tool always runs first on a warm cache
            for tool in order:
                if tool == "curl" and limit:
                    continue  # one capped connection: ~41 s for 1 GiB at 25 MiB/s, known
                out = out_dir / f"{tool}.bin"
                for leftover in out_dir.glob(f"{tool}.bin*"):
                    leftover.unlink()
                argv = tools(url, out, sha, hf_files)[tool]
                r = run_measured(argv)
                check(out, sha, src.stat().st_size)
                if tool == "accel":
                    done = json.loads(r["stdout"].strip().splitlines()[-1])
                    r["verify_tail_s"] = done["verify_tail_s"]
                    r["connections"] = done["connections"]
                r.pop("stdout")
                results.setdefault(tool, []).append(r)
                print(f"  {name} run {i + 1} {tool:11s} {r['wall']:6.2f} s "
                      f"{r['peak_rss'] / 2**20:6.0f} MiB cpu {r['cpu_s']:.2f} s "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
                out.unlink()
                settle()
    return summarize(results, src.stat().st_size)


def summarize(results: dict[str, list[dict[str, Any]]], size: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for tool, rs in results.items():
        wall = statistics.median(r["wall"] for r in rs)
        table[tool] = {
            "median_wall_s": round(wall, 3),
            "mb_s": round(size / wall / 1e6, 1),
            "peak_rss_mib": round(max(r["peak_rss"] for r in rs) / 2**20, 1),
            "walls": [round(r["wall"], 3) for r in rs],
            "cpu_s_median": round(statistics.median(r["cpu_s"] for r in rs), 2),
        }
        if tool == "accel":
            table[tool]["verify_tail_s_median"] = round(
                statistics.median(r["verify_tail_s"] for r in rs), 3
            )
    accel = table["accel"]["median_wall_s"]
    for tool in table:
        table[tool]["accel_ratio"] = round(accel / table[tool]["median_wall_s"], 3)
    return table


def memory_4g(runs: int) -> dict[str, Any]:
    src = DATA / "src4" / "f4g.bin"
    sha = make_file(src, 4 * GiB)
    out = DATA / "out" / "accel4.bin"
    peaks, walls = [], []
    with start_nginx(src.parent) as ng:
        for _ in range(runs):
            r = run_measured([PY, "-m", "accel", "get", ng.file_url(src.name), "-o", str(out),
                              "--sha256", sha, "--json"])  # fmt: skip
            peaks.append(r["peak_rss"])
            walls.append(r["wall"])
            out.unlink()
    return {"peak_rss_mib": round(max(peaks) / 2**20, 1), "walls": [round(w, 2) for w in walls]}


def kill_and_resume(src: Path, sha: str, limit: str | None) -> dict[str, Any]:
    """kill -9 at about half way, rerun; count what the origin sent in total."""
    size = src.stat().st_size
    out = DATA / "out" / "resume.bin"
    for leftover in out.parent.glob("resume.bin*"):
        leftover.unlink()
    with start_nginx(src.parent, limit_rate=limit) as ng:
        argv = [PY, "-m", "accel", "get", ng.file_url(src.name), "-o", str(out),
                "--sha256", sha, "--json"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        killed_at = 0
        for line in proc.stdout:
            ev = json.loads(line)
            if ev.get("event") == "progress" and ev["committed"] >= size // 2:
                killed_at = ev["committed"]
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        proc.stdout.close()
        time.sleep(0.5)
        first = ng.bytes_sent()
        cp = load_checkpoint(out)
        recorded = sum(c.end - c.start for c in cp.chunks) if cp is not None else 0
        r = run_measured(argv)
        done = json.loads(r["stdout"].strip().splitlines()[-1])
        total = ng.bytes_sent()
    out.unlink()
    return {
        "size": size,
        "committed_at_kill": killed_at,
        "checkpointed_at_kill": recorded,
        "origin_bytes_first_run": first,
        "origin_bytes_total": total,
        "overhead_mib": round((total - size) / 2**20, 1),
        "resumed_bytes": done["resumed_bytes"],
        "rerun_wall_s": round(r["wall"], 2),
    }


_SMALL_SCRIPT = """
import asyncio, sys
from pathlib import Path
from accel.fetch import Engine

async def main(base, out, n):
    async with Engine() as engine:
        sem = asyncio.Semaphore(3)
        async def one(i):
            async with sem:
                await engine.download(f"{base}/s{i}.bin", Path(out) / f"s{i}.bin")
        await asyncio.gather(*(one(i) for i in range(n)))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def small_files(runs: int, n: int = 500, size: int = 100_000) -> dict[str, Any]:
    """n small files, 3 at a time: one Engine in a fresh process vs ``aria2c -j3 -i``."""
    src = DATA / "small"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = src / f"s{i}.bin"
        if not p.exists() or p.stat().st_size != size:
            p.write_bytes(os.urandom(size))
    out = DATA / "out" / "small"
    walls: dict[str, list[float]] = {"accel": [], "aria2c": []}
    with start_nginx(src) as ng:
        urls = DATA / "small-urls.txt"
        urls.write_text("".join(f"{ng.url}/s{i}.bin\n" for i in range(n)))
        argv = {
            "accel": [PY, "-c", _SMALL_SCRIPT, ng.url, str(out), str(n)],
            "aria2c": ["aria2c", "-q", "-j3", "-i", str(urls), "-d", str(out),
                       "--allow-overwrite=true", "--auto-file-renaming=false"],
        }  # fmt: skip
        for i in range(runs):
            for tool in ("accel", "aria2c") if i % 2 == 0 else ("aria2c", "accel"):
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                walls[tool].append(run_measured(argv[tool])["wall"])
                if len(list(out.glob("s*.bin"))) != n:
                    raise RuntimeError(f"{tool} did not fetch all {n} files")
    shutil.rmtree(out, ignore_errors=True)
    med = {t: statistics.median(w) for t, w in walls.items()}
    return {
        "files": n,
        "size": size,
        "median_wall_s": {t: round(v, 3) for t, v in med.items()},
        "walls": {t: [round(x, 3) for x in w] for t, w in walls.items()},
        "accel_ratio": round(med["accel"] / med["aria2c"], 3),
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [f"Command: `{res['command']}`  ", f"Load average before/after: {res['load']}  "]
    for sc in ("S1", "S2"):
        if sc not in res:
            continue
        lines += ["", f"**{sc}** ({res[sc + '_desc']}), median of {res['runs']} runs:", "",
                  "| tool | median wall s | MB/s | accel / tool | peak tree RSS MiB | CPU s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for tool, t in res[sc].items():
            lines.append(
                f"| {tool} | {t['median_wall_s']:.2f} | {t['mb_s']:.0f} | "
                f"{t['accel_ratio']:.2f}x | {t['peak_rss_mib']:.0f} | {t['cpu_s_median']:.2f} |"
            )
        lines.append(f"\naccel last byte -> verified file (median): "
                     f"{res[sc]['accel']['verify_tail_s_median']:.3f} s")  # fmt: skip
    if "mem4g" in res:
        lines.append(f"\naccel peak tree RSS, 4 GiB file (S1): {res['mem4g']['peak_rss_mib']} MiB")
    if "small" in res:
        k = res["small"]
        lines.append(
            f"\n{k['files']} files of {k['size']} bytes, 3 at a time: accel (one Engine, fresh "
            f"process) {k['median_wall_s']['accel']:.2f} s, aria2c -j3 "
            f"{k['median_wall_s']['aria2c']:.2f} s ({k['accel_ratio']:.2f}x)"
        )
    if "resume" in res:
        k = res["resume"]
        lines.append(
            f"\nkill -9 at {k['committed_at_kill'] / 2**20:.0f} MiB committed "
            f"({k['checkpointed_at_kill'] / 2**20:.0f} MiB in the checkpoint), then rerun: "
            f"origin sent {k['origin_bytes_total'] / 2**20:.0f} MiB in total for a "
            f"{k['size'] / 2**20:.0f} MiB file (+{k['overhead_mib']} MiB)"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=GiB)
    ap.add_argument("--quick", action="store_true", help="1 run, no 4 GiB, no resume")
    ap.add_argument("--only", choices=["S1", "S2", "mem4g", "resume", "small"], default=None)
    args = ap.parse_args()
    runs = 1 if args.quick else args.runs
    src = DATA / "src" / "f1g.bin"
    if args.size != GiB:
        src = DATA / "src" / f"f{args.size}.bin"
    sha = make_file(src, args.size)
    res: dict[str, Any] = {
        "command": "./scripts/bench fetch  (python bench/bench_fetch.py "
        + " ".join(sys.argv[1:])
        + ")",
        "runs": runs,
        "cpus": os.cpu_count(),
    }
    load0 = os.getloadavg()
    if args.only in (None, "S1"):
        res["S1_desc"] = "plain nginx"
        res["S1"] = scenario("S1", None, src, sha, runs, 16)
    if args.only in (None, "S2"):
        res["S2_desc"] = "nginx limit_rate 25m per connection"
        res["S2"] = scenario("S2", "25m", src, sha, runs, 64)
    if not args.quick and args.only in (None, "mem4g"):
        res["mem4g"] = memory_4g(1)
    if not args.quick and args.only in (None, "small"):
        res["small"] = small_files(runs)
    if not args.quick and args.only in (None, "resume"):
        res["resume"] = kill_and_resume(src, sha, "25m")
    load1 = os.getloadavg()
    res["load"] = f"{load0[0]:.2f} / {load1[0]:.2f}"
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "fetch.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print()
    print(markdown(res))
    shutil.rmtree(DATA / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
