"""Many sources per file (issue 19): the three figures, with real nginx mirrors.

Each mirror is an nginx inside its own network namespace (``tests/support/netns.py``):
a ``tc tbf`` on its link caps the mirror's total, nginx's ``limit_rate`` caps each
connection, as a CDN node does. Every download is ``accel get URL --mirror ...
--manifest M --file f.bin --json`` (block digests from the manifest), into /dev/shm.

1. Two mirrors, each 12 MB/s per connection and 100 MB/s in total: accel with both
   against accel with one (runs interleaved; the issue asks for <= 0.55x).
2. Three mirrors, one holding a copy with a byte flipped every 3 MiB (nginx serves the
   corrupt copy: a real lying mirror): verified, and what the liar sent (its access
   log's ``$bytes_sent``, discarded bytes included) as a share of the file (< 5%).
3. Three mirrors, one 10x slower (1.2 MB/s per connection, 10 MB/s in total) than the
   other two: the time against the two fast ones alone (interleaved; <= 1.15x).

Needs root (namespaces, tc). Usage: ``python bench/bench_sources.py [--size 1GiB]
[--runs 2] [--block 4MiB]``; prints a markdown section for bench/RESULTS.md and writes
``bench/out/sources.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from accel.hub.publish import hash_file  # noqa: E402
from accel.schema import ChunkDigests, ManifestFile, VersionManifest, version_checksum  # noqa: E402
from accel.units import parse_size  # noqa: E402
from tests.support.netns import NetNS  # noqa: E402
from tests.support.nginx import NGINX, _config  # noqa: E402

MiB = 1 << 20
WORK = Path("/dev/shm/accel-bench-sources")
#: the same fixed budget for every run (16 per source, two sources): the figures measure
#: the source policy, not the engine's connection tuner
CONNECTIONS = 32


@contextlib.contextmanager
def mirror(root: Path, *, total: str, per_connection: int) -> Iterator[tuple[str, Path]]:
    """nginx serving ``root`` in a namespace capped at ``total``; yields (base URL, log)."""
    with NetNS(rate=total, burst="256kb") as ns:
        prefix = Path(os.path.join(WORK, "nginx-" + ns.name))
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.mkdir(parents=True)
        conf = _config(80, root.resolve(), prefix, str(per_connection), True)
        conf = conf.replace("listen 127.0.0.1:80", f"listen {ns.addr}:80")
        (prefix / "nginx.conf").write_text(conf)
        ns.popen(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://{ns.addr}:80"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(["curl", "-sfI", f"{url}/f.bin"], capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("nginx in the namespace did not answer")
        try:
            yield url, prefix / "access.log"
        finally:
            shutil.rmtree(prefix, ignore_errors=True)


def bytes_sent(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(int(line.split()[-1]) for line in log.read_text().splitlines() if line.strip())


def get(url: str, mirrors: list[str], manifest: Path, out: Path) -> dict[str, Any]:
    """One ``accel get``: the done line plus the CPU seconds of accel and its workers."""
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    argv = [sys.executable, "-m", "accel", "get", url, "--manifest", str(manifest)]
    argv += ["--file", "f.bin", "-o", str(out), "--json", "-q", "-x", str(CONNECTIONS)]
    for m in mirrors:
        argv += ["--mirror", m]
    before = os.times()
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    wall = time.monotonic() - t0
    after = os.times()
    if r.returncode != 0:
        raise RuntimeError(f"accel get failed: {r.stderr[-2000:]}")
    done = json.loads(r.stdout.splitlines()[-1])
    done["wall_s"] = wall
    done["cpu_s"] = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    out.unlink()
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--block", default="4MiB")
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every rate cap (0.1: 1.2 MB/s per connection, 10 MB/s per mirror), "
        "so that a loaded 2-core machine's CPU is not what the figures measure",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_sources: needs root (network namespaces, tc)", file=sys.stderr)
        return 1
    size, block = parse_size(args.size), parse_size(args.block)
    WORK.mkdir(parents=True, exist_ok=True)
    good, bad = WORK / "good", WORK / "bad"
    for d in (good, bad):
        d.mkdir(exist_ok=True)
    src = good / "f.bin"
    if not src.exists() or src.stat().st_size != size:
        with open(src, "wb") as f:
            left = size
            while left:
                n = min(left, 64 * MiB)
                f.write(os.urandom(n))
                left -= n
    # the lying mirror's copy: one byte flipped every 3 MiB
    shutil.copyfile(src, bad / "f.bin")
    with open(bad / "f.bin", "r+b") as f:
        for off in range(3 * MiB - 1, size, 3 * MiB):
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xFF]))
    n, sha, digests = hash_file(src, block)
    entry = ManifestFile(
        path="f.bin",
        size_bytes=n,
        sha256=sha,
        chunks=ChunkDigests(size=block, digests=digests),
    )
    manifest = VersionManifest(
        model_id="bench",
        version="1",
        size_bytes=n,
        files=[entry],
        checksum_sha256=version_checksum([entry]),
        updated_at="2026-01-01T00:00:00Z",
    )
    mpath = WORK / "manifest.json"
    mpath.write_text(manifest.model_dump_json())
    out = WORK / "out.bin"
    k = args.scale
    fast = {"total": f"{int(800 * k)}mbit", "per_connection": int(12_000_000 * k)}
    slow = {"total": f"{int(80_000 * k)}kbit", "per_connection": int(1_200_000 * k)}
    res: dict[str, Any] = {"size": size, "block": block, "scale": k, "load_before": _load()}
    with (
        mirror(good, **fast) as (a, _a_log),  # type: ignore[arg-type]
        mirror(good, **fast) as (b, _b_log),  # type: ignore[arg-type]
        mirror(good, **slow) as (c, _c_log),  # type: ignore[arg-type]
        mirror(bad, **fast) as (liar, liar_log),  # type: ignore[arg-type]
    ):
        f = "/f.bin"
        one, two, three, fast2 = [], [], [], []
        for i in range(args.runs):
            order = [("one", one, a + f, []), ("two", two, a + f, [b + f])]
            order += [("fast2", fast2, a + f, [b + f]), ("three", three, a + f, [c + f, b + f])]
            if i % 2:
                order.reverse()
            for name, into, url, mirrors in order:
                r = get(url, mirrors, mpath, out)
                into.append(r)
                print(f"run {i + 1} {name}: {r['elapsed_s']:.2f} s, cpu {r['cpu_s']:.1f} s",
                      flush=True)  # fmt: skip
        before = bytes_sent(liar_log)
        lied = get(a + f, [liar + f, b + f], mpath, out)
        liar_sent = bytes_sent(liar_log) - before
    res["load_after"] = _load()

    def med(rs: list[dict[str, Any]]) -> float:
        return statistics.median(r["elapsed_s"] for r in rs)

    res["one_s"], res["two_s"] = med(one), med(two)
    res["fast2_s"], res["three_s"] = med(fast2), med(three)
    res["two_over_one"] = res["two_s"] / res["one_s"]
    res["three_over_fast2"] = res["three_s"] / res["fast2_s"]
    res["liar"] = {
        "verified": lied["verified"],
        "sha256_ok": lied["sha256"] == sha,
        "elapsed_s": lied["elapsed_s"],
        "liar_bytes_sent": liar_sent,
        "share": liar_sent / size,
        "sources": lied.get("sources"),
    }
    res["runs"] = {"one": one, "two": two, "fast2": fast2, "three": three}
    outdir = REPO / "bench" / "out"
    outdir.mkdir(exist_ok=True)
    (outdir / "sources.json").write_text(json.dumps(res, indent=1))
    commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True,
                            text=True, cwd=REPO).stdout.strip()  # fmt: skip
    gib = size / (1 << 30)
    print(f"""
## Many sources per file (issue 19)

`python bench/bench_sources.py --size {args.size} --runs {args.runs} --block {args.block} --scale {k:g}`
at `{commit[:60]}`; 2-core VM shared with other engineers' runs (load
{res["load_before"]} before, {res["load_after"]} after). Mirrors: nginx in a network
namespace each, `tc tbf` for the mirror's total, nginx `limit_rate` per connection;
`accel get URL --mirror ... --manifest M --file f.bin -x {CONNECTIONS}` into /dev/shm, {gib:g} GiB,
blake3 blocks of {block // MiB} MiB; medians of {args.runs} interleaved runs.

| figure | result | asked |
|---|---|---|
| two mirrors ({12 * k:g} MB/s per connection, {100 * k:g} MB/s each) vs one | {res["two_s"]:.2f} s vs {res["one_s"]:.2f} s = **{res["two_over_one"]:.2f}x** | <= 0.55x |
| one of three mirrors flips a byte every 3 MiB | verified: {lied["verified"] and lied["sha256"] == sha}; the liar sent {liar_sent / MiB:.1f} MiB = **{100 * liar_sent / size:.2f}%** of the file (discarded included) | < 5% |
| three mirrors, one 10x slower, vs the two fast ones | {res["three_s"]:.2f} s vs {res["fast2_s"]:.2f} s = **{res["three_over_fast2"]:.2f}x** | <= 1.15x |
""")
    return 0


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    raise SystemExit(main())
