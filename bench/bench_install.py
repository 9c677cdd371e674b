"""ModelManager installs vs aria2c, from the real hub (``accel serve``) on 127.0.0.1.

Scenarios (each tool in turn, the order rotated every run, ``--runs`` times, medians):

- A "big": one 1 GiB file plus 20 files of 1-8 MiB. accel: ``accel install big@1``
  (every file verified against its SHA256, registry written, ready);
  aria2c: ``aria2c -i LIST -j3 -x16 -s16`` over the same storage URLs (no verification),
  and for reference the same LIST with ``checksum=sha-256=...`` on every entry
  (``aria2c_sha256``: aria2c checks each file after its download).
- B "many": 500 files of 64 KiB-2 MiB, same two commands.
- C "ten": ten models installed at once by ten ``accel install`` processes into one
  models dir, through a counting proxy in front of the hub: all ready, registry valid,
  bytes the origin sent vs the sum of the versions' sizes.

Usage: ``./scripts/bench install`` or
``python bench/bench_install.py [--runs N] [--quick] [--only big|many|ten]...``.
Writes ``bench/out/install.json`` and prints a markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from measure import discard  # noqa: E402

from accel.hub.publish import publish  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
from tests.support.hub import make_files, running_hub  # noqa: E402

MiB = 1 << 20
DATA = Path(os.environ.get("ACCEL_BENCH_DATA", "/var/tmp/accel-bench")) / "install"
PY = sys.executable


def spec_big(quick: bool) -> dict[str, int]:
    rng = random.Random(1)
    spec = {"model.bin": (128 if quick else 1024) * MiB}
    spec.update({f"extra/f{i:02d}.bin": rng.randint(1 * MiB, 8 * MiB) for i in range(20)})
    return spec


def spec_many(quick: bool) -> dict[str, int]:
    rng = random.Random(2)
    n = 100 if quick else 500
    return {f"shards/s{i:03d}.bin": rng.randint(64 * 1024, 2 * MiB) for i in range(n)}


def spec_small_model(i: int) -> dict[str, int]:
    return {"weights.bin": 16 * MiB + i, **{f"t{j}.bin": MiB + 7 * j + i for j in range(4)}}


def ensure_store(root: Path, quick: bool) -> dict[str, dict[str, int]]:
    """Publish the bench models once (kept between runs: publishing hashes 1.5 GiB)."""
    specs = {"big": spec_big(quick), "many": spec_many(quick)}
    specs.update({f"ten{i}": spec_small_model(i) for i in range(10)})
    stamp = root / f"published-{'quick' if quick else 'full'}.json"
    if stamp.exists() and json.loads(stamp.read_text()) == specs:
        return specs
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for model_id, spec in specs.items():
        with tempfile.TemporaryDirectory(dir=DATA) as tmp:
            make_files(Path(tmp), spec, seed=3)
            publish(Path(tmp), root, model_id, "1", default=True, block_size=16 * MiB)
    stamp.write_text(json.dumps(specs))
    return specs


def settle() -> None:
    """Flush dirty pages and let the disk go quiet before a timed run (not timed).

    Every tool's output is removed after its run, but the filesystem work of that
    (and of the files written) lands on whoever runs next; accel's `syncfs` before
    `ready` waits for all of it. The fetch bench does the same between tools.
    """
    os.sync()
    time.sleep(0.5)


def disk_probe(where: Path, size: int = 256 * MiB) -> float:
    """MB/s of a write of ``size`` bytes plus fsync at ``where`` (not timed in a figure).

    These machines' disks throttle after a burst (seen: 1 GiB + fsync at 172 MB/s after
    some GB of bench writes, much faster before). accel syncs before ``ready`` and aria2c
    does not, so a throttled disk moves the ratio: each run records the disk it had.
    """
    path = where / ".disk-probe"
    block = os.urandom(MiB)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // MiB):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return round(size / (time.perf_counter() - t0) / 1e6, 1)


#: CPU seconds (user + system) of every timed run, by tool: the tool's own process tree
#: (accel's workers included) and the hub's, over the same run
CPU: dict[str, dict[str, list[float]]] = {}
HUB: dict[str, psutil.Process] = {}


def timed(argv: list[str], tool: str) -> float:
    settle()
    hub = HUB.get("hub")
    hub0 = sum(hub.cpu_times()[:2]) if hub is not None else 0.0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({r.returncode}): {r.stderr[-2000:]}")
    cpu = CPU.setdefault(tool, {"own": [], "hub": []})
    cpu["own"].append(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
    cpu["hub"].append(sum(hub.cpu_times()[:2]) - hub0 if hub is not None else 0.0)
    return wall


def run_accel(hub_url: str, model: str, work: Path) -> float:
    models = work / "models"
    shutil.rmtree(models, ignore_errors=True)
    wall = timed(
        [
            PY,
            "-m",
            "accel",
            "install",
            f"{model}@1",
            "--hub",
            hub_url,
            "--models-dir",
            str(models),
            "--quiet",
        ],
        f"{model}/accel",
    )
    reg = json.loads((models / "registry.json").read_text())
    assert reg["installs"][f"{model}@1"]["state"] == "ready"
    discard(models)
    return wall


def hub_sha256s(hub_url: str, model: str) -> dict[str, str]:
    """The files' SHA256 as the hub's model list gives them (for aria2c's ``checksum=``)."""
    with urllib.request.urlopen(f"{hub_url}/api/models/{model}") as r:
        info = json.load(r)
    (version,) = [v for v in info["versions"] if v["version"] == "1"]
    return {f["path"]: f["sha256"] for f in version["files"]}


def _openssl_check(out: Path, sha256s: dict[str, str], work: Path) -> str:
    """A shell line: ``openssl dgst -sha256`` over every file, each digest compared
    (the lists go through files: 500 paths are too long for one command line)."""
    names = work / "openssl-files.txt"
    names.write_text("".join(f"{out / rel}\n" for rel in sha256s))
    want = work / "openssl-want.txt"
    want.write_text("".join(f"{sha256s[rel]} *{out / rel}\n" for rel in sha256s))
    return (
        f"xargs -d '\\n' -a {shlex.quote(str(names))} openssl dgst -sha256 -r"
        f" | diff -q - {shlex.quote(str(want))}"
    )


def run_aria2c(
    hub_url: str,
    model: str,
    spec: dict[str, int],
    work: Path,
    sha256s: dict[str, str] | None = None,
    openssl: dict[str, str] | None = None,
) -> float:
    """aria2c over the version's storage URLs; with ``sha256s``, each entry carries
    ``checksum=sha-256=...`` and aria2c checks it after the download (exit 32 if not);
    with ``openssl``, ``openssl dgst -sha256`` checks every file after aria2c ends."""
    out = work / "aria2"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    lines = []
    for rel in spec:
        check = f"  checksum=sha-256={sha256s[rel]}\n" if sha256s is not None else ""
        lines.append(f"{hub_url}/storage/models/{model}/1/{rel}\n  out={rel}\n{check}")
    listing = work / "list.txt"
    listing.write_text("".join(lines))
    argv = [
        "aria2c",
        "-i",
        str(listing),
        "-j3",
        "-x16",
        "-s16",
        "-d",
        str(out),
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--console-log-level=error",
        "--summary-interval=0",
        "-q",
    ]
    suffix = "_sha256" if sha256s is not None else ""
    if openssl is not None:
        line = " ".join(shlex.quote(a) for a in argv) + " && " + _openssl_check(out, openssl, work)
        argv, suffix = ["bash", "-c", line], "_openssl"
    wall = timed(argv, f"{model}/aria2c{suffix}")
    got = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert got == sum(spec.values()), (got, sum(spec.values()))
    discard(out)
    return wall


def run_curl_openssl(
    hub_url: str, model: str, spec: dict[str, int], work: Path, sha256s: dict[str, str]
) -> float:
    """curl fetching the files one after another, then ``openssl dgst -sha256`` over
    each: the serial verified pipeline of issue 15's CPU-per-verified-GiB figure."""
    out = work / "curl"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = work / "curl.cfg"  # one request after another, as the list says
    config.write_text(
        "".join(
            f'url = "{hub_url}/storage/models/{model}/1/{rel}"\noutput = "{out / rel}"\n'
            for rel in spec
        )
    )
    argv = ["curl", "-sS", "--fail", "--create-dirs", "-K", str(config)]
    line = " ".join(shlex.quote(a) for a in argv) + " && " + _openssl_check(out, sha256s, work)
    wall = timed(["bash", "-c", line], f"{model}/curl_openssl")
    got = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert got == sum(spec.values()), (got, sum(spec.values()))
    discard(out)
    return wall


def scenario_ten(hub_url: str, specs: dict[str, dict[str, int]], work: Path) -> dict[str, Any]:
    models = work / "ten-models"
    shutil.rmtree(models, ignore_errors=True)
    with FaultProxy(hub_url) as proxy:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    PY,
                    "-m",
                    "accel",
                    "install",
                    f"ten{i}@1",
                    f"ten{(i + 1) % 10}@1",
                    "--hub",
                    proxy.url,
                    "--models-dir",
                    str(models),
                    "--quiet",
                    "--workers",
                    "1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(10)
        ]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        errors = [p.stderr.read() for p in procs if p.stderr is not None and p.returncode]
        for p in procs:
            if p.stderr is not None:
                p.stderr.close()
        sent = proxy.client_body_bytes
    reg = json.loads((models / "registry.json").read_text())
    need = sum(sum(specs[f"ten{i}"].values()) for i in range(10))
    result = {
        "processes": 10,
        "exit_codes": codes,
        "errors": errors[:2],
        "ready": sum(1 for r in reg["installs"].values() if r["state"] == "ready"),
        "registry_schema_version": reg["schema_version"],
        "wall_s": round(wall, 2),
        "version_bytes": need,
        "origin_storage_and_api_bytes": sent,
        "ratio_sent_to_needed": round(sent / need, 4),
    }
    discard(models)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller files, for a smoke run")
    ap.add_argument(
        "--only",
        choices=("big", "many", "ten"),
        action="append",
        help="run only these scenarios (repeatable; default: all three)",
    )
    ap.add_argument(
        "--work",
        help="where both tools write (default: a temporary folder beside the store; "
        "a tmpfs here takes the disk out of the comparison)",
    )
    ap.add_argument(
        "--out",
        default=str(REPO / "bench" / "out" / "install.json"),
        help="where to write the JSON results",
    )
    args = ap.parse_args()
    only = set(args.only or ("big", "many", "ten"))
    DATA.mkdir(parents=True, exist_ok=True)
    root = DATA / "store"
    t0 = time.perf_counter()
    specs = ensure_store(root, args.quick)
    print(f"store ready in {time.perf_counter() - t0:.1f} s", flush=True)
    load_before = os.getloadavg()
    results: dict[str, Any] = {
        "runs": args.runs,
        "quick": args.quick,
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    with running_hub(root) as hub, tempfile.TemporaryDirectory(dir=args.work or DATA) as tmp:
        HUB["hub"] = psutil.Process(hub.proc.pid)
        work = Path(tmp)
        results["work_dir"] = str(work)
        results["disk_MBps_before"] = disk_probe(work)
        for model in [m for m in ("big", "many") if m in only]:
            spec = specs[model]
            sha256s = hub_sha256s(hub.url, model)
            tools = ["accel", "aria2c", "aria2c_sha256", "aria2c_openssl", "curl_openssl"]
            walls: dict[str, list[float]] = {t: [] for t in tools}
            order = list(walls)
            for i in range(args.runs):
                # Rotated every run: none of the tools always follows the same one (the
                # disk's write-out of the previous run and the VM's memory state carry over).
                for tool in order[i % len(order) :] + order[: i % len(order)]:
                    if tool == "accel":
                        walls[tool].append(run_accel(hub.url, model, work))
                    elif tool == "aria2c_openssl":
                        walls[tool].append(run_aria2c(hub.url, model, spec, work, openssl=sha256s))
                    elif tool == "curl_openssl":
                        walls[tool].append(run_curl_openssl(hub.url, model, spec, work, sha256s))
                    else:
                        check = sha256s if tool == "aria2c_sha256" else None
                        walls[tool].append(run_aria2c(hub.url, model, spec, work, check))
                print(model, {k: round(v[-1], 2) for k, v in walls.items()}, flush=True)
            med = {k: statistics.median(v) for k, v in walls.items()}
            size = sum(spec.values())
            results[model] = {
                "files": len(spec),
                "bytes": size,
                "walls_s": {k: [round(x, 3) for x in v] for k, v in walls.items()},
                "median_s": {k: round(v, 3) for k, v in med.items()},
                "MBps": {k: round(size / v / 1e6, 1) for k, v in med.items()},
                "ratio_accel_to_aria2c": round(med["accel"] / med["aria2c"], 3),
                # CPU seconds (user + system), medians: the tool's process tree, the hub
                "cpu_s": {
                    k: {
                        part: round(statistics.median(v), 2)
                        for part, v in CPU[f"{model}/{k}"].items()
                    }
                    for k in walls
                },
                # a reference, not the figure: aria2c told to check each file's
                # SHA256 too (it reads every file back after its download)
                "ratio_accel_to_aria2c_sha256": round(med["accel"] / med["aria2c_sha256"], 3),
                # issue 15: against aria2c followed by openssl over the files
                "ratio_accel_to_aria2c_openssl": round(med["accel"] / med["aria2c_openssl"], 3),
                # issue 15's CPU per verified GiB: accel's tree against curl + openssl's
                "cpu_ratio_accel_to_curl_openssl": round(
                    statistics.median(CPU[f"{model}/accel"]["own"])
                    / statistics.median(CPU[f"{model}/curl_openssl"]["own"]),
                    3,
                ),
            }
        if "ten" in only:
            results["ten"] = scenario_ten(hub.url, specs, work)
        results["disk_MBps_after"] = disk_probe(work)
    results["loadavg_before"] = [round(x, 2) for x in load_before]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
