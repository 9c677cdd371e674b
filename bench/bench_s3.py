"""The hub on S3-compatible object storage vs the directory hub, and accel vs boto3.

``--runs`` runs of each (default 3; the order rotated every run; medians), on loopback, with the test S3 server
of ``tests/support/s3.py`` (SeaweedFS when ``weed`` is on PATH, else Ceph's RADOS Gateway
on a one-node memstore cluster; or any S3 via ``ACCEL_TEST_S3_ENDPOINT``):

- hub CPU per GiB delivered: ``accel get`` of the 1 GiB file through a redirect-mode S3
  hub vs through a directory-store hub (the hub's own CPU seconds over the run);
- ``accel get`` through the hub's 307 vs straight from a presigned URL;
- ``accel get --sha256`` vs boto3's ``download_file`` (default TransferConfig) followed by
  ``openssl dgst -sha256`` of the same object;
- ``accel install`` of 1 GiB + 20 files (1-8 MiB) from the S3 hub vs the directory hub.

Usage: ``./scripts/bench s3`` or ``python bench/bench_s3.py [--quick] [--runs N]``
(``--quick``: 128 MiB).
Writes ``bench/out/s3.json`` and prints a markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
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

from accel.hub.publish import publish  # noqa: E402
from tests.support.hub import make_files, running_hub  # noqa: E402
from tests.support.s3 import S3Bucket, running_s3, running_s3_hub  # noqa: E402

MiB = 1 << 20
DATA = Path(os.environ.get("ACCEL_BENCH_DATA", "/var/tmp/accel-bench")) / "s3"
PY = sys.executable


def spec(quick: bool) -> dict[str, int | bytes]:
    rng = random.Random(1)
    out: dict[str, int | bytes] = {"model.bin": (128 if quick else 1024) * MiB}
    out.update({f"extra/f{i:02d}.bin": rng.randint(1 * MiB, 8 * MiB) for i in range(20)})
    return out


def settle() -> None:
    os.sync()
    time.sleep(0.5)


#: The S3 server's processes (set once it runs): their CPU is recorded with every command,
#: since on a small machine the store's own per-byte cost shares the cores with the client.
STORE: list[psutil.Process] = []


def _store_cpu() -> float:
    return sum(sum(p.cpu_times()[:2]) for p in STORE)


def timed(
    argv: list[str], env: dict[str, str], hub: psutil.Process | None = None
) -> dict[str, float]:
    """Wall seconds, own CPU (the process tree), the hub's and the store's CPU over one
    command."""
    settle()
    hub0 = sum(hub.cpu_times()[:2]) if hub is not None else 0.0
    store0 = _store_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
        "hub_cpu_s": round(sum(hub.cpu_times()[:2]) - hub0, 3) if hub is not None else 0.0,
        "store_cpu_s": round(_store_cpu() - store0, 3),
        "stdout": r.stdout[-400:],  # type: ignore[dict-item]
    }


def accel_get(
    url: str, out: Path, sha: str, env: dict[str, str], hub: psutil.Process | None
) -> dict[str, float]:
    try:
        return timed(
            [PY, "-m", "accel", "get", url, "-o", str(out), "--sha256", sha, "-q"], env, hub
        )
    finally:
        out.unlink(missing_ok=True)


def accel_install(
    hub_url: str, work: Path, env: dict[str, str], hub: psutil.Process
) -> dict[str, float]:
    models = work / "models"
    shutil.rmtree(models, ignore_errors=True)
    try:
        return timed([PY, "-m", "accel", "install", "big@1", "--hub", hub_url, "--models-dir",
                      str(models), "--quiet"], env, hub)  # fmt: skip
    finally:
        shutil.rmtree(models, ignore_errors=True)


BOTO = """
import sys, boto3
c = boto3.client("s3")
c.download_file(sys.argv[1], sys.argv[2], sys.argv[3])
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool, order rotated")
    args = ap.parse_args()
    load_start = os.getloadavg()
    DATA.mkdir(parents=True, exist_ok=True)
    src = DATA / ("src-quick" if args.quick else "src")
    files = spec(args.quick)
    if not (src / "model.bin").exists():
        make_files(src, files)
    sha = hashlib.sha256()
    with open(src / "model.bin", "rb") as f:
        while block := f.read(8 * MiB):
            sha.update(block)
    big_sha = sha.hexdigest()
    big = files["model.bin"]
    assert isinstance(big, int)
    gib = big / (1 << 30)
    results: dict[str, Any] = {"size_bytes": big, "quick": args.quick}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-s3-", dir=DATA)))
        root = work / "dir-store"
        publish(src, root, "big", "1", default=True)
        server = stack.enter_context(running_s3())
        results["server"] = server.kind
        STORE.extend(psutil.Process(p.pid) for p in server.procs)
        name = f"bench-{os.getpid()}"
        server.client().create_bucket(Bucket=name)
        bucket = S3Bucket(server, name)
        env = dict(bucket.env, PYTHONPATH=str(REPO))
        t0 = time.perf_counter()
        r = subprocess.run([PY, "-m", "accel", "publish", str(src), "--root", bucket.url, "--model",
                            "big", "--version", "1"], env=env, capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        results["publish_s3_s"] = round(time.perf_counter() - t0, 2)
        dir_hub = stack.enter_context(running_hub(root))
        s3_hub = stack.enter_context(running_s3_hub(bucket, work / "state"))
        dir_proc = psutil.Process(dir_hub.proc.pid)
        s3_proc = psutil.Process(s3_hub.proc.pid)
        out = work / "out.bin"
        presigned = server.client().generate_presigned_url(
            "get_object",
            Params={"Bucket": name, "Key": "models/big/1/files/model.bin"},
            ExpiresIn=3600,
        )
        # What each hub costs doing nothing (the S3 hub polls catalog.stamp every 2 s): a
        # per-second cost, not a per-byte one, taken out for the net per-GiB figure.
        idle_s = 20.0
        settle()
        idle0 = {"dir": sum(dir_proc.cpu_times()[:2]), "s3": sum(s3_proc.cpu_times()[:2])}
        time.sleep(idle_s)
        idle_rate = {
            "dir": (sum(dir_proc.cpu_times()[:2]) - idle0["dir"]) / idle_s,
            "s3": (sum(s3_proc.cpu_times()[:2]) - idle0["s3"]) / idle_s,
        }
        results["hub_idle_cpu_s_per_s"] = {k: round(v, 5) for k, v in idle_rate.items()}
        runs: dict[str, list[dict[str, float]]] = {}
        gets = {
            "get_dir_hub": (dir_hub.file_url("big", "1", "model.bin"), dir_proc),
            "get_s3_redirect": (s3_hub.file_url("big", "1", "model.bin"), s3_proc),
            "get_presigned": (presigned, None),
        }
        installs = {
            "install_dir_hub": (dir_hub.url, dir_proc),
            "install_s3_hub": (s3_hub.url, s3_proc),
        }
        for i in range(args.runs):
            order = list(gets)
            order = order[i % len(order) :] + order[: i % len(order)]  # rotated every run
            for tool in order:
                url, proc = gets[tool]
                runs.setdefault(tool, []).append(accel_get(url, out, big_sha, env, proc))
            boto = timed([PY, "-c", BOTO, name, "models/big/1/files/model.bin", str(out)], env)
            dgst = timed(["openssl", "dgst", "-sha256", str(out)], env)
            assert big_sha in str(dgst["stdout"]), dgst
            out.unlink(missing_ok=True)
            runs.setdefault("boto3_download_file", []).append(boto)
            runs.setdefault("openssl_dgst", []).append(dgst)
            for tool in list(installs)[:: 1 if i % 2 == 0 else -1]:
                url, proc = installs[tool]
                runs.setdefault(tool, []).append(accel_install(url, work, env, proc))
        results["runs"] = {k: [{kk: vv for kk, vv in r.items() if kk != "stdout"} for r in v]
                           for k, v in runs.items()}  # fmt: skip
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    hub_cpu = {k: sum(r["hub_cpu_s"] for r in v) / (len(v) * gib) for k, v in runs.items()}
    cpu_dir, cpu_s3 = hub_cpu["get_dir_hub"], hub_cpu["get_s3_redirect"]
    results["median_wall_s"] = {k: round(v, 3) for k, v in med.items()}
    results["ratios"] = {
        "hub_cpu_per_gib_redirect_vs_dir": round(cpu_s3 / cpu_dir, 4) if cpu_dir else None,
        "get_redirect_vs_presigned": round(med["get_s3_redirect"] / med["get_presigned"], 3),
        "get_redirect_vs_boto3_plus_openssl": round(
            med["get_s3_redirect"] / (med["boto3_download_file"] + med["openssl_dgst"]), 3
        ),
        "install_s3_vs_dir": round(med["install_s3_hub"] / med["install_dir_hub"], 3),
    }
    results["hub_cpu_s_per_gib"] = {"dir": round(cpu_dir, 3), "s3_redirect": round(cpu_s3, 4)}

    def net(tool: str, kind: str) -> float:
        v = runs[tool]
        spent = sum(r["hub_cpu_s"] - idle_rate[kind] * r["wall_s"] for r in v)
        return max(0.0, spent) / (len(v) * gib)

    net_dir, net_s3 = net("get_dir_hub", "dir"), net("get_s3_redirect", "s3")
    results["hub_cpu_s_per_gib_net_of_idle"] = {
        "dir": round(net_dir, 3),
        "s3_redirect": round(net_s3, 4),
    }
    results["ratios"]["hub_cpu_per_gib_redirect_vs_dir_net_of_idle"] = (
        round(net_s3 / net_dir, 4) if net_dir else None
    )
    results["store_cpu_s_median"] = {
        k: statistics.median(r["store_cpu_s"] for r in v) for k, v in runs.items()
    }
    results["load_avg_start"] = load_start
    results["load_avg"] = os.getloadavg()
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    (REPO / "bench" / "out" / "s3.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
