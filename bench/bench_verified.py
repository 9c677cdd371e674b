"""Verified against verified: accel get vs each peer followed by ``openssl dgst -sha256``.

Issue 15's S1/S2 table. 1 GiB of random bytes served by nginx (1 worker, sendfile;
S2 adds ``limit_rate 25m`` per connection), written to ext4 (``ACCEL_BENCH_DATA``,
default /var/tmp/accel-bench). accel checks the SHA256 of every byte before it renames
the file; each peer's output is hashed afterwards by ``openssl dgst -sha256`` (SHA
extensions; coreutils' sha256sum has none here and is 4x slower), and the digest checked.
Columns: accel get, curl + openssl, aria2c -x16 + openssl, hf_transfer + openssl,
aria2c with no check, curl to /dev/null (the transfer alone). S2 skips the curl columns
(one capped connection: ~41 s for 1 GiB).

A sync and a 1 s pause between runs; tools interleaved (the order rotates every run);
medians and spread (max/min) over ``--runs`` runs *including the first* (the first run
after an idle spell is part of what a user sees). CPU = user + system seconds of each
whole process tree. Peak tree PSS is sampled in one separate run per tool (``--no-pss``
skips it).

Usage: ``./scripts/bench verified`` or ``python bench/bench_verified.py [--runs N]
[--only S1|S2] [--tools accel,curl_openssl,...]``. Writes bench/out/verified.json and
bench/out/verified.md (the table for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_fetch import make_file  # noqa: E402
from measure import Run, load, machine, run_steps, settle  # noqa: E402

from tests.support.nginx import start_nginx  # noqa: E402

GiB = 1 << 30
DATA = Path(os.environ.get("ACCEL_BENCH_DATA", "/var/tmp/accel-bench"))
PY = sys.executable

TOOLS = ("accel", "curl_openssl", "aria2c_openssl", "hf_openssl", "aria2c_nocheck", "curl_null")
TITLES = {
    "accel": "accel get",
    "curl_openssl": "curl + openssl",
    "aria2c_openssl": "aria2c -x16 + openssl",
    "hf_openssl": "hf_transfer + openssl",
    "aria2c_nocheck": "aria2c, no check",
    "curl_null": "curl to /dev/null",
}


def openssl(out: Path) -> list[str]:
    return ["openssl", "dgst", "-sha256", "-r", str(out)]


def aria2c(url: str, out: Path) -> list[str]:
    return ["aria2c", "-q", "-x16", "-s16", "-k8M", "--allow-overwrite=true",
            "--auto-file-renaming=false", "--file-allocation=none",
            "-d", str(out.parent), "-o", out.name, url]  # fmt: skip


def steps(tool: str, url: str, out: Path, sha: str, hf_files: int) -> list[list[str]]:
    """The commands of one tool's run, in order."""
    if tool == "accel":
        return [[PY, "-m", "accel", "get", url, "-o", str(out), "--sha256", sha, "--json"]]
    if tool == "curl_openssl":
        return [["curl", "-sS", "-o", str(out), url], openssl(out)]
    if tool == "aria2c_openssl":
        return [aria2c(url, out), openssl(out)]
    if tool == "aria2c_nocheck":
        return [aria2c(url, out)]
    if tool == "hf_openssl":
        hf = [PY, "-c", "import sys, hf_transfer; hf_transfer.download(sys.argv[1], "
              "sys.argv[2], int(sys.argv[3]), 10 * 1024 * 1024)", url, str(out), str(hf_files)]  # fmt: skip
        return [hf, openssl(out)]
    if tool == "curl_null":
        return [["curl", "-sS", "-o", "/dev/null", url]]
    raise ValueError(tool)


def one_run(tool: str, url: str, sha: str, hf_files: int, *, pss: bool) -> Run:
    out_dir = DATA / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{tool}.bin"
    for leftover in out_dir.glob(f"{tool}.bin*"):
        leftover.unlink()
    r = run_steps(steps(tool, url, out, sha, hf_files), sample_pss=pss)
    if tool.endswith("_openssl"):
        got = r.stdout.split()[0] if r.stdout.split() else ""
        if got != sha:
            raise RuntimeError(f"{tool}: openssl says {got!r}, expected {sha}")
    if tool == "accel":
        done = json.loads(r.stdout.strip().splitlines()[-1])
        if done.get("sha256") not in (None, sha):
            raise RuntimeError(f"accel: {done}")
    for leftover in out_dir.glob(f"{tool}.bin*"):
        leftover.unlink()
    return r


def scenario(
    name: str, limit: str | None, src: Path, sha: str, runs: int, tools: list[str], pss: bool
) -> dict[str, Any]:
    hf_files = 64 if limit else 16
    if limit:
        tools = [t for t in tools if not t.startswith("curl")]
    rows: dict[str, list[Run]] = {t: [] for t in tools}
    peaks: dict[str, int] = {}
    with start_nginx(src.parent, limit_rate=limit) as ng:
        url = ng.file_url(src.name)
        for i in range(runs):
            k = i % len(tools)
            for tool in tools[k:] + tools[:k]:  # rotated: no tool always follows the same one
                settle()
                r = one_run(tool, url, sha, hf_files, pss=False)
                rows[tool].append(r)
                print(f"  {name} run {i + 1} {tool:15s} {r.wall:6.2f} s cpu {r.cpu:5.2f} s "
                      f"{[round(c, 2) for c in r.steps_cpu]} load {load()}", flush=True)  # fmt: skip
        if pss:
            for tool in tools:
                settle()
                r = one_run(tool, url, sha, hf_files, pss=True)
                peaks[tool] = r.peak_pss
                print(f"  {name} pss {tool:15s} {r.peak_pss / 2**20:6.1f} MiB", flush=True)
    table: dict[str, Any] = {}
    for tool, rs in rows.items():
        walls = [r.wall for r in rs]
        table[tool] = {
            "median_wall_s": round(statistics.median(walls), 3),
            "walls": [round(w, 3) for w in walls],
            "spread": round(max(walls) / min(walls), 2),
            "median_cpu_s": round(statistics.median(r.cpu for r in rs), 3),
            "cpus": [round(r.cpu, 3) for r in rs],
            "median_steps_cpu_s": [
                round(statistics.median(r.steps_cpu[j] for r in rs), 3)
                for j in range(len(rs[0].steps_cpu))
            ],
            "peak_pss_mib": round(peaks[tool] / 2**20, 1) if tool in peaks else None,
        }
    return table


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Command: `{res['command']}`; commit {m['commit']}; {m['utc']} UTC  ",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, SHA extensions (sha_ni): "
        f"{'yes' if m['sha_ni'] else 'no'}; load before {res['load_before']}, "
        f"after {res['load_after']}  ",
        f"{res['runs']} runs per tool, interleaved, sync + 1 s pause between runs; "
        "median (runs in order, first included; spread = max/min); CPU = user+sys s of the "
        "whole tree (tool + openssl), median.",
        "",
    ]
    tools = [t for t in TOOLS if any(t in res[s] for s in ("S1", "S2") if s in res)]
    lines.append("| scenario | " + " | ".join(TITLES[t] for t in tools) + " |")
    lines.append("|---" * (len(tools) + 1) + "|")
    for sc, desc in (("S1", "S1 plain"), ("S2", "S2 25 MB/s per connection")):
        if sc not in res:
            continue
        cells = []
        for t in tools:
            row = res[sc].get(t)
            if row is None:
                cells.append("-")
                continue
            runs = ", ".join(f"{w:.2f}" for w in row["walls"])
            cells.append(
                f"{row['median_wall_s']:.2f} s (runs {runs}; spread {row['spread']:.2f}); "
                f"CPU {row['median_cpu_s']:.2f} s"
                + (f"; PSS {row['peak_pss_mib']:.0f} MiB" if row["peak_pss_mib"] else "")
            )
        lines.append(f"| {desc} | " + " | ".join(cells) + " |")
    lines.append("")
    s1 = res.get("S1", {})
    if "accel" in s1 and "curl_openssl" in s1:
        a, c = s1["accel"], s1["curl_openssl"]
        lines.append(
            f"S1 accel / (curl + openssl): wall {a['median_wall_s'] / c['median_wall_s']:.2f}x, "
            f"CPU {a['median_cpu_s'] / c['median_cpu_s']:.2f}x (curl {c['median_steps_cpu_s'][0]:.2f}"
            f" + openssl {c['median_steps_cpu_s'][1]:.2f} s); accel spread {a['spread']:.2f}"
        )
    if "S2" in res and "accel" in res["S2"] and "accel" in s1:
        a2 = res["S2"]["accel"]
        line = f"S2 accel / S1 accel: {a2['median_wall_s'] / s1['accel']['median_wall_s']:.2f}x"
        if "aria2c_openssl" in res["S2"]:
            ar = res["S2"]["aria2c_openssl"]["median_wall_s"]
            line += f"; S2 accel / (aria2c -x16 + openssl): {a2['median_wall_s'] / ar:.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=GiB)
    ap.add_argument("--only", choices=["S1", "S2"], action="append")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    ap.add_argument("--no-pss", action="store_true", help="skip the separate PSS runs")
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    bad = set(tools) - set(TOOLS)
    if bad:
        ap.error(f"unknown tools {sorted(bad)}; known: {', '.join(TOOLS)}")
    src = DATA / "src" / ("f1g.bin" if args.size == GiB else f"f{args.size}.bin")
    sha = make_file(src, args.size)
    res: dict[str, Any] = {
        "command": "./scripts/bench verified"
        + (f" (bench/bench_verified.py {' '.join(sys.argv[1:])})" if sys.argv[1:] else ""),
        "runs": args.runs,
        "size": args.size,
        "machine": machine(),
        "load_before": load(),
    }
    only = args.only or ["S1", "S2"]
    if "S1" in only:
        res["S1"] = scenario("S1", None, src, sha, args.runs, tools, not args.no_pss)
    if "S2" in only:
        res["S2"] = scenario("S2", "25m", src, sha, args.runs, tools, not args.no_pss)
    res["load_after"] = load()
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "verified.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (out / "verified.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
