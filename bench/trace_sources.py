"""Where a many-sources download spends its time: a trace of bench_sources' two mirrors.

The same mirrors as ``bench/bench_sources.py`` (nginx in a network namespace each,
``tc tbf`` for a mirror's total, ``limit_rate`` per connection), one download at a time
in this process, sampled every 50 ms: per source its connections in use, the bytes it
has sent (finished requests plus running ones) and its measured rate; and every
request's source, bytes and times. Prints a timeline (every 0.25 s) and a summary: the
start (first byte of each source, when each reached its full connections), the middle
(bytes per second with every connection busy) and the tail (from the last chunk handed
out to the last byte, and how many connections ran in it).

Needs root. ``python bench/trace_sources.py [--size 1GiB] [--block 4MiB] [--only two]
[--per-source 16] [--connections 32|auto] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_sources import CONNECTIONS, WORK, mirror  # noqa: E402

from accel.fetch.drive import ChunkDriver  # noqa: E402
from accel.fetch.engine import Engine  # noqa: E402
from accel.fetch.types import Expected  # noqa: E402
from accel.hub.publish import hash_file  # noqa: E402
from accel.schema import ChunkDigests  # noqa: E402
from accel.units import parse_size  # noqa: E402

MiB = 1 << 20


async def traced(
    urls: list[str],
    expected: Expected,
    out: Path,
    per_source: int = 16,
    connections: int | str = CONNECTIONS,
) -> dict[str, Any]:
    requests: list[dict[str, Any]] = []
    original = ChunkDriver._run_chunk

    async def run_chunk(self: Any, chunk: Any, handle: Any, src: int = 0) -> None:
        t0 = time.monotonic()
        start, end = chunk.start, chunk.end
        try:
            await original(self, chunk, handle, src)
        finally:
            requests.append(
                {
                    "src": src,
                    "start": start,
                    "end": chunk.end,
                    "asked_end": end,
                    "t0": t0,
                    "t1": time.monotonic(),
                }
            )

    ChunkDriver._run_chunk = run_chunk  # type: ignore[method-assign]
    from accel.fetch.sources_race import TailRace

    races: list[dict[str, Any]] = []
    original_race = TailRace._run_race

    async def run_race(self: Any, race: Any) -> None:
        t0 = time.monotonic()
        try:
            await original_race(self, race)
        finally:
            races.append(
                {
                    "src": race.source,
                    "start": race.start,
                    "end": race.chunk.end,
                    "t0": t0,
                    "t1": time.monotonic(),
                    "lost": race.lost,
                    "claimed": race.stop_at is not None,
                }
            )

    TailRace._run_race = run_race  # type: ignore[method-assign]
    samples: list[dict[str, Any]] = []
    async with Engine(connections=connections) as engine:
        await engine.start()
        t_begin = time.monotonic()

        async def sample() -> None:
            while True:
                for d in list(engine._downloads):
                    per: list[dict[str, Any]] = [
                        {"active": s.active, "served": s.served, "rate": s.rate}
                        for s in d.policy.sources
                    ]
                    for cid, (src, _t0) in list(d.chunk_src.items()):
                        h = d.handles.get(cid)
                        if h is not None:
                            per[src]["served"] += max(0, h.position - h.task.start)
                    samples.append(
                        {
                            "t": time.monotonic() - t_begin,
                            "sources": per,
                            "pending": d.plan.pending_count if d.plan else None,
                            "races": len(d.races),
                            "capacity": engine.slots.capacity,
                            "allowance": [s.allowance for s in d.policy.sources],
                        }
                    )
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(sample())
        try:
            res = await engine.download(
                urls[0],
                out,
                expected=expected,
                mirrors=urls[1:],
                durable=False,
                max_connections_per_source=per_source,
            )
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    ChunkDriver._run_chunk = original  # type: ignore[method-assign]
    TailRace._run_race = original_race  # type: ignore[method-assign]
    for r in races + requests:
        r["t0"] -= t_begin
        r["t1"] -= t_begin
    return {"elapsed_s": res.elapsed_s, "samples": samples, "requests": requests, "races": races}


def report(name: str, tr: dict[str, Any]) -> None:
    samples, reqs = tr["samples"], tr["requests"]
    n = len(samples[-1]["sources"]) if samples else 0
    print(f"\n== {name}: {tr['elapsed_s']:.2f} s, {len(reqs)} requests")
    last = -1.0
    prev: dict[str, Any] | None = None
    for s in samples:
        if s["t"] - last < 0.25 and s is not samples[-1]:
            continue
        cells = []
        for i, x in enumerate(s["sources"]):
            mbps = ""
            if prev is not None:
                dt = s["t"] - prev["t"]
                mbps = f"{(x['served'] - prev['sources'][i]['served']) / dt / 1e6:6.1f}MB/s"
            rate = f"{x['rate'] / 1e6:5.1f}" if x["rate"] else "  -  "
            cells.append(f"s{i} a={x['active']:2d} {x['served'] / MiB:7.1f}MiB {mbps} r={rate}")
        print(f"{s['t']:6.2f} pend={s['pending']} races={s['races']} | " + " | ".join(cells))
        last, prev = s["t"], s
    for i in range(n):
        mine = [r for r in reqs if r["src"] == i]
        if not mine:
            continue
        first = min(r["t0"] for r in mine)
        print(f"s{i}: {len(mine)} requests, first sent {first:.2f} s, "
              f"last ended {max(r['t1'] for r in mine):.2f} s")  # fmt: skip
    if reqs:
        last_sent = max(r["t0"] for r in reqs)
        end = max(r["t1"] for r in reqs)
        tail = [r for r in reqs if r["t1"] > last_sent]
        print(f"tail: last request sent {last_sent:.2f} s, last ended {end:.2f} s "
              f"({end - last_sent:.2f} s); verified at {tr['elapsed_s']:.2f} s")  # fmt: skip
        for r in sorted(tail, key=lambda r: r["t1"])[-8:]:
            print(f"   s{r['src']} {r['start'] / MiB:8.1f}-{r['end'] / MiB:8.1f} MiB "
                  f"{r['t0']:.2f}-{r['t1']:.2f} s")  # fmt: skip


def report_races(tr: dict[str, Any]) -> None:
    for r in tr["races"]:
        print(f"race on s{r['src']} {r['start'] / MiB:8.1f}-{r['end'] / MiB:8.1f} MiB "
              f"{r['t0']:.2f}-{r['t1']:.2f} s lost={r['lost']} claimed={r['claimed']}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--block", default="4MiB")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--per-source", type=int, default=16)
    ap.add_argument("--connections", default=str(CONNECTIONS), help="a number or auto")
    ap.add_argument("--only", choices=["one", "two"])
    args = ap.parse_args()
    size, block = parse_size(args.size), parse_size(args.block)
    good = WORK / "good"
    good.mkdir(parents=True, exist_ok=True)
    src = good / "f.bin"
    if not src.exists() or src.stat().st_size != size:
        with open(src, "wb") as f, open("/dev/urandom", "rb") as r:
            for _ in range(size // MiB):
                f.write(r.read(MiB))
    n, sha, digests = hash_file(src, block)
    expected = Expected(size=n, sha256=sha, chunks=ChunkDigests(size=block, digests=digests))
    fast = {"total": "800mbit", "per_connection": 12_000_000}
    out = WORK / "trace.bin"
    traces = {}
    with mirror(good, **fast) as (a, _), mirror(good, **fast) as (b, _):  # type: ignore[arg-type]
        for name, urls in (("one", [a + "/f.bin"]), ("two", [a + "/f.bin", b + "/f.bin"])):
            if args.only not in (None, name):
                continue
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            conns = args.connections if args.connections == "auto" else int(args.connections)
            traces[name] = asyncio.run(traced(urls, expected, out, args.per_source, conns))
            report(name, traces[name])
            report_races(traces[name])
    out.unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(traces))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
